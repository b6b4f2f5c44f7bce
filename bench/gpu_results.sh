#!/usr/bin/env bash
# The GPU runs behind docs/results.md (galaxies and CIFAR-10: experts -> MTT/STM -> evaluation)
# and docs/performance.md (expert-training speed). `cifar` and `galaxy` without a GPU are laid out for one
# 4-GPU machine (below); the modes that take GPU numbers fit any machine.
#
#   bench/gpu_results.sh cifar      # CIFAR-10 (standard layout under $CIFAR_ROOT): prepare, then start
#   bench/gpu_results.sh galaxy gz1-128      # a prepared 128-px galaxy set (gz1-128 or simzoo-128): start
#   bench/gpu_results.sh galaxy simzoo-128 GPU IPC...   # the same on one GPU for the IPCs named only
#   bench/gpu_results.sh speed GPU           # distill_speed --precision bf16, experts_profile, then experts_speed
#                                            # (once cifar10-all-zca is prepared) with the fastest profiled setup
#   bench/gpu_results.sh kernels GPU         # top GPU kernels of the compiled expert step, then of every
#                                            # distill_speed config
#   bench/gpu_results.sh experts GPU         # cifar10-all-zca from $CIFAR_ROOT while the training way is profiled at
#                                            # both precisions, then the timed 100 x 50 experts at the faster one
#   bench/gpu_results.sh distill-compiled GPU [CONFIG...]   # distill_speed --compile --kernels 16 (all nine configs, or
#                                            # those named; each config's GPU kernels profiled after its timing);
#                                            # PRECISION=bf16 for the student's forward under bf16 autocast,
#                                            # CHUNK_PIXELS=N for distill_speed --chunk-pixels N
#   bench/gpu_results.sh cuda-tests GPU      # the GPU tests (models, CUDA graphs, expert training) -> pytest_cuda_final.log
#   bench/gpu_results.sh final GPU           # everything docs/performance.md states, at one revision: the CUDA tests
#                                            # (unless `cuda-tests` was started first; waits for them) while
#                                            # cifar10-all-zca is prepared from $CIFAR_ROOT, the timed 100 x 50 experts
#                                            # (as `experts`; EXPERTS_PROFILE=JSON takes the precision from that
#                                            # profile instead of profiling again), then distill_speed --compile --precision bf16
#                                            # on all nine configs and fp32 on CIFAR-10 IPC 50
#   bench/gpu_results.sh final-rest GPU      # what `final` did not reach at revision 7e4ef0f (its device time ended): the
#                                            # CUDA tests again, then distill_speed --compile --precision bf16 on the
#                                            # 128-px IPC-50 config and fp32 on CIFAR-10 IPC 50 (no CIFAR data needed);
#                                            # last, the convolutions by operand shapes (--convolution-shapes) of the
#                                            # three IPC-10 configs, compiled bf16, without CUDA graphs
#   bench/gpu_results.sh prepare-cifar       # cifar10-all-zca (all 50,000 training images) from $CIFAR_ROOT
#   bench/gpu_results.sh cifar50 GPU_A GPU_B # CIFAR-10 IPC 50 pair: compiled experts on A, then STM there and MTT
#                                            # with the full-data baseline on B (A = B on a one-GPU machine)
#   bench/gpu_results.sh status              # what has finished, and each log's last line
#   bench/gpu_results.sh collect OUT_DIR [RUN_GLOB]   # results and logs, and each run, as archives
#
# Jobs start in the background (setsid), so that further calls can bring data in while they
# run; every job writes its results JSON into $GALAXY_DISTILL_HOME/results. Placement:
#   GPU 0: bench/experts_speed.py alone (100 experts x 50 epochs, timed);
#   GPU 1: gz1-128 experts, then IPC 1 and 10, MTT and STM (4 processes), and CIFAR-10 IPC 50 STM;
#   GPU 2: simzoo-128, likewise;
#   GPU 3: the CIFAR-10 experts for distillation, then IPC 1 and 10 (4 processes) and IPC 50 MTT.
# Processes sharing a GPU slow each other: their wall times are upper bounds.
set -u
WS=${GALAXY_DISTILL_HOME:?set GALAXY_DISTILL_HOME}
HERE=$(cd "$(dirname "$0")" && pwd)
RESULTS=$WS/results
LOGS=$WS/logs
mkdir -p "$RESULTS" "$LOGS"
export OMP_NUM_THREADS=4
# CIFAR_EXPERTS may be set by the caller: a one-GPU session fits fewer experts.
export RESULTS LOGS HERE CIFAR_EXPERTS=${CIFAR_EXPERTS:-"--num-experts 20 --expert-epochs 50 --expert-batch 256"}

background() {  # name gpu command...: run detached from this call, logging to $LOGS/name.log
  local name=$1 gpu=$2
  shift 2
  CUDA_VISIBLE_DEVICES=$gpu setsid nohup "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
}

galaxy_chain() {  # dataset expert_batch expert_epochs [ipc...] (default: 1 10)
  local dataset=$1 expert_batch=$2 expert_epochs=$3
  shift 3
  local ipcs=("$@")
  [ $# -eq 0 ] && ipcs=(1 10)
  local common=(--dataset "$dataset" --num-experts 10 --expert-epochs "$expert_epochs" --expert-batch "$expert_batch" --syn-steps 20
                --max-start-epoch 10 --lr-img 100 --iterations 300 --eval-every 100 --networks 5 --epochs 500
                --architectures convnet resnet18 vgg11)
  python3 "$HERE/pipeline.py" "${common[@]}" --experts-only --out "$RESULTS/${dataset}_experts.json" || return
  local ipc
  for ipc in "${ipcs[@]}"; do
    python3 "$HERE/pipeline.py" "${common[@]}" --ipc "$ipc" --methods stm --baselines random class_average \
      --out "$RESULTS/${dataset}_ipc${ipc}_stm.json" >"$LOGS/${dataset}_ipc${ipc}_stm.log" 2>&1 &
    if [ "$ipc" = 1 ]; then local full=(full); else local full=(); fi
    python3 "$HERE/pipeline.py" "${common[@]}" --ipc "$ipc" --methods mtt --baselines "${full[@]}" \
      --out "$RESULTS/${dataset}_ipc${ipc}_mtt.json" >"$LOGS/${dataset}_ipc${ipc}_mtt.log" 2>&1 &
  done
  wait
}

# MTT's published CIFAR-10 hyperparameters (Cazenavette et al. 2022, table 6): syn_steps, expert
# epochs M, max start epoch, pixel lr, initial student lr. STM takes M = 1 (its definition).
cifar_run() {  # ipc method
  local ipc=$1 method=$2 match=1
  [ "$method" = mtt ] && match=2
  local -A steps=([1]=50 [10]=30 [50]=30) start=([1]=2 [10]=20 [50]=40) lr_img=([1]=100 [10]=100000 [50]=100)
  local -A lr_init=([1]=0.01 [10]=0.01 [50]=0.001) iterations=([1]=500 [10]=500 [50]=300)
  local baselines=()
  [ "$method" = stm ] && baselines=(random class_average)
  [ "$method" = mtt ] && [ "$ipc" = "${FULL_WITH_IPC:-1}" ] && baselines=(full)
  python3 "$HERE/pipeline.py" --dataset cifar10-zca $CIFAR_EXPERTS --ipc "$ipc" --methods "$method" \
    --syn-steps "${steps[$ipc]}" --match-epochs "$match" --max-start-epoch "${start[$ipc]}" --lr-img "${lr_img[$ipc]}" \
    --lr-init "${lr_init[$ipc]}" --iterations "${iterations[$ipc]}" --eval-every 100 --networks 5 --epochs 1000 \
    --baselines "${baselines[@]}" --out "$RESULTS/cifar10_ipc${ipc}_${method}.json"
}

cifar_prepare() {  # NAME [ARGS...]: CIFAR-10 from $CIFAR_ROOT, standardised and ZCA-whitened, as MTT
  python3 -m galaxy_distill data prepare cifar10 --root "${CIFAR_ROOT:?set CIFAR_ROOT}" --zca --name "$@"
}

cifar_experts() {  # the experts that every CIFAR-10 distillation here shares
  cifar_prepare cifar10-zca && python3 "$HERE/pipeline.py" --dataset cifar10-zca $CIFAR_EXPERTS --experts-only \
    --out "$RESULTS/cifar10_experts.json"
}

experts_precisions() {  # OUT_JSON: the way --compile trains experts (10 at once), profiled at both precisions
  python3 "$HERE/experts_profile.py" --experts 10 --compiled-only --precisions fp32 bf16-full --out "$1"
}

experts_precision_then_speed() {  # the way --compile trains at each precision (profiled while CIFAR-10 is prepared
  # from $CIFAR_ROOT), then the timed 100 x 50 experts of docs/performance.md at the faster one
  experts_precisions "$RESULTS/experts_precisions.json" &
  cifar_prepare cifar10-all-zca --val-fraction 0
  wait
  experts_timed "$RESULTS/experts_precisions.json"
}

experts_timed() {  # PROFILE_JSON: the timed 100 x 50 experts in the way that profile found fastest
  python3 "$HERE/experts_speed.py" --dataset cifar10-all-zca --num-experts 100 --epochs 50 --test-every 10 \
    --fastest-of "$1" --out "$RESULTS/experts_speed.json"
}

cuda_tests() {  # the tests that skip without a GPU; the exit status goes to a file that `final` waits for
  (cd "$HERE/.." && python3 -m pytest -q -p no:cacheprovider tests/test_models.py tests/test_cuda_graphs.py \
    tests/test_experts_train.py) >"$LOGS/pytest_cuda_final.log" 2>&1
  echo $? >"$LOGS/pytest_cuda_final.rc"
}

cifar_experts_ready() {
  until [ -f "$RESULTS/cifar10_experts.json" ]; do sleep 5; done
}

export -f cifar_run cifar_prepare cifar_experts experts_precisions experts_precision_then_speed experts_timed cuda_tests cifar_experts_ready \
  galaxy_chain

case "${1:-}" in
  cifar50)
    : "${CIFAR_ROOT:?set CIFAR_ROOT}"
    export CIFAR_EXPERTS="$CIFAR_EXPERTS --expert-compile --expert-precision bf16-full" FULL_WITH_IPC=50
    background cifar10_experts "${2:?usage: $0 cifar50 GPU_A GPU_B}" bash -c cifar_experts
    background cifar10_ipc50_stm "$2" bash -c "cifar_experts_ready && cifar_run 50 stm"
    background cifar10_ipc50_mtt "${3:?usage: $0 cifar50 GPU_A GPU_B}" bash -c "cifar_experts_ready && cifar_run 50 mtt"
    ;;
  cifar)
    : "${CIFAR_ROOT:?set CIFAR_ROOT}"
    # The timed experts train on all 50,000 training images, as in MTT; the distillation runs hold out 5,000 for validation.
    background experts_speed 0 bash -c experts_precision_then_speed
    background cifar10_experts 3 bash -c cifar_experts
    for job in "1 stm 3" "1 mtt 3" "10 stm 3" "10 mtt 3" "50 stm 1" "50 mtt 3"; do
      set -- $job
      background "cifar10_ipc$1_$2" "$3" bash -c "cifar_experts_ready && cifar_run $1 $2"
    done
    ;;
  galaxy)  # gz1-128 on GPU 1 or simzoo-128 on GPU 2: expert batch and epochs keep an expert epoch near syn_steps steps
    case "${2:-}" in
      gz1-128) args=(64 15) gpu=1 ;;
      simzoo-128) args=(32 20) gpu=2 ;;
      *) echo "usage: $0 galaxy gz1-128|simzoo-128 [GPU IPC...]" >&2; exit 2 ;;
    esac
    background "$2" "${3:-$gpu}" bash -c "galaxy_chain $2 ${args[*]} ${*:4}"
    ;;
  experts)
    : "${CIFAR_ROOT:?set CIFAR_ROOT}"
    background experts_speed "${2:?usage: $0 experts GPU}" bash -c experts_precision_then_speed
    ;;
  distill-compiled)  # GPU [CONFIG...]: distill_speed with compiled student steps (each config compiles for a minute or more)
    gpu=${2:?usage: $0 distill-compiled GPU [CONFIG...]}
    shift 2
    configs=()
    [ $# -gt 0 ] && configs=(--configs "$@")
    precision=${PRECISION:-fp32}
    name=distill_compiled_$precision${CHUNK_PIXELS:+_chunk$CHUNK_PIXELS}
    background "$name" "$gpu" python3 "$HERE/distill_speed.py" --compile --kernels 16 --precision "$precision" \
      ${CHUNK_PIXELS:+--chunk-pixels "$CHUNK_PIXELS"} "${configs[@]}" --out "$RESULTS/$name.json"
    ;;
  final)
    : "${CIFAR_ROOT:?set CIFAR_ROOT}"
    speed="python3 $HERE/distill_speed.py --compile"
    profile=${EXPERTS_PROFILE:-$RESULTS/experts_precisions.json}
    profiling="experts_precisions $profile"
    [ -n "${EXPERTS_PROFILE:-}" ] && profiling=true
    # Nothing timed shares the GPU with the tests: they overlap only the preparation of CIFAR-10.
    background final "${2:?usage: $0 final GPU}" bash -c "
      [ -f $LOGS/pytest_cuda_final.log ] || cuda_tests &
      cifar_prepare cifar10-all-zca --val-fraction 0 >$LOGS/prepare_cifar.log 2>&1
      until [ -f $LOGS/pytest_cuda_final.rc ]; do sleep 2; done
      $profiling && experts_timed $profile
      $speed --precision bf16 --out $RESULTS/distill_final_bf16.json
      $speed --configs cifar10_ipc50 --out $RESULTS/distill_final_fp32.json"
    ;;
  final-rest)
    speed="python3 $HERE/distill_speed.py --compile"
    background final_rest "${2:?usage: $0 final-rest GPU}" bash -c "
      cuda_tests
      $speed --precision bf16 --configs gzoo2_128_ipc50 --out $RESULTS/distill_final_bf16_gzoo2_128_ipc50.json
      $speed --configs cifar10_ipc50 --out $RESULTS/distill_final_fp32.json
      $speed --precision bf16 --no-cuda-graphs --convolution-shapes 12 \
        --configs cifar10_ipc10 cifar100_ipc10 gzoo2_128_ipc10 --out $RESULTS/distill_convolutions.json"
    ;;
  cuda-tests)
    background cuda_tests "${2:?usage: $0 cuda-tests GPU}" bash -c cuda_tests
    ;;
  prepare-cifar)
    : "${CIFAR_ROOT:?set CIFAR_ROOT}"
    background prepare_cifar 0 bash -c "cifar_prepare cifar10-all-zca --val-fraction 0"
    ;;
  kernels)
    background kernels "${2:?usage: $0 kernels GPU}" bash -c "python3 $HERE/experts_profile.py --experts 10 --kernels 14 \
      --compiled-only --precisions bf16-full --out $RESULTS/experts_kernels.json; python3 $HERE/distill_speed.py --kernels 14 --out $RESULTS/distill_kernels.json"
    ;;
  speed)  # GPU: alone on that GPU, one after another, so that no timing shares it
    ready="until [ -f $WS/datasets/cifar10-all-zca/meta.json ]; do sleep 5; done"
    background speed "${2:?usage: $0 speed GPU}" bash -c "python3 $HERE/distill_speed.py --precision bf16 \
      --out $RESULTS/distill_speed_bf16.json; python3 $HERE/experts_profile.py --experts 10 --compiled-only \
      --precisions fp32 bf16-full --out $RESULTS/experts_profile.json; $ready; python3 $HERE/experts_speed.py --dataset cifar10-all-zca \
      --num-experts 100 --epochs 50 --fastest-of $RESULTS/experts_profile.json --out $RESULTS/experts_speed.json"
    ;;
  status)
    ls -la "$RESULTS"
    for log in "$LOGS"/*.log; do
      printf '%s: %s\n' "$(basename "$log")" "$(tr '\r' '\n' <"$log" | grep -v '^\s*$' | tail -n 1 | cut -c1-200)"
    done
    nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
    ;;
  collect)  # OUT_DIR [RUN_GLOB]: results and logs in one archive, and one per run (no checkpoints or snapshots),
    # so that each stays under the 16 MiB a file that the device tool brings back (8 files a call: pick runs by glob)
    out=${2:?usage: $0 collect OUT_DIR [RUN_GLOB]}
    mkdir -p "$out"
    tar czf "$out/results.tgz" -C "$WS" results logs
    for run in "$WS"/runs/${3:-*}; do
      [ -d "$run" ] || continue
      archive="$out/$(basename "$run").tgz"
      tar czf "$archive" --exclude='checkpoint-*.safetensors' --exclude=snapshots \
        --exclude=tensorboard --exclude='*.partial.json' -C "$WS" "runs/$(basename "$run")"
      # The device tool returns files of at most 16 MiB: larger archives travel as parts (cat them back together).
      if [ "$(stat -c %s "$archive")" -gt $((15 * 1024 * 1024)) ]; then
        split -b 15M -d "$archive" "$archive.part-" && rm "$archive"
      fi
    done
    ls -la "$out"
    ;;
  *)
    echo "usage: $0 cifar|cifar50 GPU_A GPU_B|galaxy NAME [GPU IPC...]|prepare-cifar|kernels GPU|speed GPU|distill-compiled GPU [CONFIG...]|experts GPU|cuda-tests GPU|final GPU|final-rest GPU|status|collect OUT_DIR [RUN_GLOB]" >&2
    exit 2
    ;;
esac

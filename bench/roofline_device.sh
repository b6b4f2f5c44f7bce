#!/usr/bin/env bash
# Issue #27 on one GPU, in one device call: the reference MTT loop (peer_speed.py) and then ours (bench/roofline.py:
# seconds per iteration at the docs' settings, compiled bf16, with FLOPs, unfused bytes, peak fractions and top
# kernels) on a group of the reference configs. See bench/results/speed/README-roofline.md for the preparation
# (.peer/mtt, .peer/harness, .peer/REVISION) and for what to do with the files afterwards.
#
#   bash bench/roofline_device.sh 32px     # the six 32-px configs (CIFAR-10 and CIFAR-100, IPC 1/10/50)
#   bash bench/roofline_device.sh 128px    # the three 128-px galaxy configs
#   bash bench/roofline_device.sh NAME CONFIG...   # the configs named (e.g. those a timed-out call did not reach)
#
# Writes into $OUT: device_NAME.log, peer_speed_NAME.jsonl and .log, roofline_NAME.json and .log. Each step is bounded
# (REFERENCE_S, default 150 s; ROOFLINE_S, default 420 s) so that the call ends inside the 600 s a device call may run;
# both programs write their file after every config, so a step stopped at its bound keeps what it measured.
# REFERENCE_S=0 skips the reference.
set -uo pipefail
group=${1:?usage: bench/roofline_device.sh 32px|128px|NAME CONFIG...}
shift
case $group in
  32px) configs="cifar10_ipc1 cifar10_ipc10 cifar10_ipc50 cifar100_ipc1 cifar100_ipc10 cifar100_ipc50" ;;
  128px) configs="gzoo2_128_ipc1 gzoo2_128_ipc10 gzoo2_128_ipc50" ;;
  *) configs="$*" ;;
esac
[ -n "$configs" ] || { echo "no configs for group $group" >&2; exit 2; }
: "${OUT:?set OUT: the folder whose files come back}"
export PYTHONUNBUFFERED=1
GALAXY_DISTILL_REVISION=${GALAXY_DISTILL_REVISION:-$(cat .peer/REVISION 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo unknown)}
export GALAXY_DISTILL_REVISION
REFERENCE_S=${REFERENCE_S:-150}
ROOFLINE_S=${ROOFLINE_S:-420}

{
  date -u
  echo "revision $GALAXY_DISTILL_REVISION, group $group: $configs"
  python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv
} 2>&1 | tee "$OUT/device_$group.log"

if [ "$REFERENCE_S" != 0 ]; then
  if [ -f .peer/mtt/utils.py ] && [ -f .peer/harness/peer_speed.py ]; then
    # shellcheck disable=SC2086
    MTT_REFERENCE_DIR="$PWD/.peer/mtt" timeout "$REFERENCE_S" python3 .peer/harness/peer_speed.py \
      --configs-file bench/mtt_reference_h200.json --configs $configs --out "$OUT/peer_speed_$group.jsonl" 2>&1 \
      | tee "$OUT/peer_speed_$group.log"
  else
    echo "no .peer/mtt/utils.py or .peer/harness/peer_speed.py (carry .peer): the reference was not run" \
      | tee "$OUT/peer_speed_$group.log"
  fi
fi

# shellcheck disable=SC2086
timeout "$ROOFLINE_S" python3 bench/roofline.py --configs $configs --out "$OUT/roofline_$group.json" 2>&1 \
  | grep -v "SyncActivityProfilerHandler" | tee "$OUT/roofline_$group.log"
date -u | tee -a "$OUT/device_$group.log"

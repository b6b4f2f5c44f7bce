#!/bin/bash
# One device session's block of the paper table (issue 26); see README.md beside this file for the session plan.
#
#   bash bench/results/paper/run_block.sh BLOCK      # BLOCK: cifar10-ipc1 | cifar10-ipc10 | cifar10-ipc50 |
#                                                     #        gz1-128-ipc{1,10,50} | simzoo-128-ipc{1,10,50}
#
# EXTRA="..." adds flags to bench/paper.py (e.g. EXTRA="--methods stm" or EXTRA="--epochs 300").
#
# Run it from a copy of the tree (/tmp/code), detached (setsid nohup), with the data already on the machine:
# CIFAR-10's WebP parts in /tmp/c10, or a galaxy set packed by bench/carry_dataset.py in /tmp/carry/<name> ($CARRY_DIR). The
# results land in $GALAXY_DISTILL_HOME/paper-results/<dataset>-ipc<K>.json as each record finishes, the log in
# $GALAXY_DISTILL_HOME/paper-results/<BLOCK>.log, and $GALAXY_DISTILL_HOME/paper-results/<BLOCK>.done at the end.
# DEADLINE_MINUTES (default 21) counts from this script's start; data preparation comes out of it.
set -euo pipefail
BLOCK=${1:?which block}
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
export GALAXY_DISTILL_HOME=${GALAXY_DISTILL_HOME:-/tmp/ws}
RESULTS=$GALAXY_DISTILL_HOME/paper-results
mkdir -p "$RESULTS"
START=$(date +%s)
DEADLINE=${DEADLINE_MINUTES:-21}
# The compiled, bf16 paths (FAST_FLAGS overrides them, e.g. with "" for a CPU dry run).
read -r -a FAST <<<"${FAST_FLAGS---expert-compile --expert-precision bf16-full --distill-compile --distill-precision bf16}"
CARRY=${CARRY_DIR:-/tmp/carry}

minutes_left() {  # [share]: the minutes left before the deadline, times share
  python3 -c "print(round(max(1.0, (${DEADLINE} * 60 - ($(date +%s) - ${START})) / 60 * ${1:-1}), 2))"
}

cifar() {  # name [--zca]: CIFAR-10 prepared from /tmp/c10 (the lossless WebP copy of ../shared/data/cifar10)
  [ -d /tmp/c10py/cifar-10-batches-py ] || python3 /tmp/c10/to_python_format.py /tmp/c10py
  python3 -m galaxy_distill.cli data prepare cifar10 --root /tmp/c10py --name "$1" "${@:2}"
}

galaxy() {  # name: a set packed here by bench/carry_dataset.py, unpacked into the workspace
  [ -f "$GALAXY_DISTILL_HOME/datasets/$1/meta.json" ] || python3 bench/carry_dataset.py unpack "$CARRY/$1"
}

paper() {  # dataset ipc minutes args...: one block of bench/paper.py
  local dataset=$1 ipc=$2 minutes=$3
  # A block begun in an earlier session goes on from its committed file: its recorded rows are kept.
  if [ ! -f "$RESULTS/$dataset-ipc$ipc.json" ] && [ -f "bench/results/paper/$dataset-ipc$ipc.json" ]; then
    cp "bench/results/paper/$dataset-ipc$ipc.json" "$RESULTS/"
  fi
  python3 bench/paper.py --dataset "$dataset" --ipc "$ipc" --deadline-minutes "$minutes" \
      --out "$RESULTS/$dataset-ipc$ipc.json" "${@:4}"
}

{
  echo "block $BLOCK, deadline $DEADLINE min, revision ${GALAXY_DISTILL_REVISION:-unknown}"
  nvidia-smi -L || true
  case $BLOCK in
    cifar10-ipc1)
      cifar cifar10-zca --zca
      paper cifar10-zca 1 "$(minutes_left)" --experts 100 "${FAST[@]}" --parallel --baselines random class-average full ${EXTRA:-} ;;
    cifar10-ipc10)
      cifar cifar10-zca --zca
      paper cifar10-zca 10 "$(minutes_left)" --experts 50 "${FAST[@]}" --parallel --baselines random class-average ${EXTRA:-} ;;
    cifar10-ipc50)
      cifar cifar10   # MTT's table: no ZCA at IPC 50
      paper cifar10 50 "$(minutes_left)" --experts 50 "${FAST[@]}" --parallel --eval-every 100 \
          --baselines random class-average ${EXTRA:-} ;;
    gz1-128-ipc*|simzoo-128-ipc*)
      name=${BLOCK%-ipc*} ipc=${BLOCK##*-ipc}
      galaxy "$name"
      case $ipc in
        10) extra=(--cross-arch --baselines random class-average full) ;;   # the cross-architecture rows; full once
        50) extra=(--eval-every 50 --baselines random class-average) ;;
        *) extra=(--baselines random class-average) ;;
      esac
      paper "$name" "$ipc" "$(minutes_left)" --experts 50 "${FAST[@]}" --parallel "${extra[@]}" ${EXTRA:-} ;;
    *) echo "unknown block $BLOCK" >&2; exit 2 ;;
  esac
  echo "finished after $(( $(date +%s) - START )) s"
  touch "$RESULTS/$BLOCK.done"
} >>"$RESULTS/$BLOCK.log" 2>&1

#!/bin/bash
# Several-seed IPC-10 comparison of the reference MTT loop and ours on the same experts (issue 23), for one device
# session: CIFAR-10 webp parts already copied to /tmp/c10 (see pipeline.sh), reference code in $MTT_REFERENCE_DIR.
# Detach it (setsid nohup) and poll /tmp/ws/seeds.done; results land in /tmp/ws/faithful_seeds_<method>.json as they finish.
set -euo pipefail
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 GALAXY_DISTILL_HOME=/tmp/ws
mkdir -p /tmp/ws
python3 /tmp/c10/to_python_format.py /tmp/c10py
python3 -m galaxy_distill.cli data prepare cifar10 --root /tmp/c10py --zca --name cifar10-zca
python3 -m galaxy_distill.cli experts --dataset cifar10-zca --num-experts 20 --epochs 22 --batch-size 256 \
    --compile --precision bf16-full --test-every 22 --out /tmp/ws/experts/cifar10-zca 2>&1 | grep -v "expert-epochs"
# The two loops run at once on the one GPU (accuracy does not depend on it; the session's device time does).
for method in mtt-reference mtt; do
  python3 bench/faithful.py --dataset cifar10-zca --experts /tmp/ws/experts/cifar10-zca --peer "${PEER:-.peer/harness}" \
      --ipcs 10 --seeds 0 1 2 --methods $method --iterations 500 --work /tmp/ws/faithful-$method \
      --out /tmp/ws/faithful_seeds_$method.json > /tmp/ws/faithful_$method.log 2>&1 &
done
wait
touch /tmp/ws/seeds.done

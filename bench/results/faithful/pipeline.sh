#!/bin/bash
# One-off device pipeline for the faithful side-by-side (issue 23); logs to /tmp/ws/pipeline.log.
set -euo pipefail
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 GALAXY_DISTILL_HOME=/tmp/ws
mkdir -p /tmp/ws
python3 /tmp/c10/to_python_format.py /tmp/c10py
python3 -m galaxy_distill.cli data prepare cifar10 --root /tmp/c10py --zca --name cifar10-zca
time python3 -m galaxy_distill.cli experts --dataset cifar10-zca --num-experts 20 --epochs 22 --batch-size 256 \
    --compile --precision bf16-full --test-every 11 --out /tmp/ws/experts/cifar10-zca
time python3 bench/faithful.py --dataset cifar10-zca --experts /tmp/ws/experts/cifar10-zca --peer .peer/harness \
    --ipcs 1 10 --iterations 500 --work /tmp/ws/faithful --out /tmp/ws/faithful.json
touch /tmp/ws/done

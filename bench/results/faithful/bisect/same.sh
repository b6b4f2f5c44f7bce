#!/bin/bash
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 GALAXY_DISTILL_HOME=/tmp/ws
mkdir -p /tmp/ws/s
python3 /tmp/c10/to_python_format.py /tmp/c10py
python3 -m galaxy_distill.cli data prepare cifar10 --root /tmp/c10py --zca --name cifar10-zca
python3 -m galaxy_distill.cli experts --dataset cifar10-zca --num-experts 10 --epochs 22 --batch-size 256 \
    --compile --precision bf16-full --test-every 22 --out /tmp/ws/experts/cifar10-zca 2>&1 | grep -v "expert-epochs"
for s in 0 1 2; do
python3 bench/results/faithful/same_draws.py --dataset cifar10-zca --experts /tmp/ws/experts/cifar10-zca --seed $s --iterations ${ITERATIONS:-100} > /tmp/ws/s/seed$s.log 2>&1 &
done
A="--ipc 10 --syn-steps 30 --max-start-epoch 20 --lr-img 1e5 --lr-lr 1e-5 --iterations 100"
for s in 1 2; do
python3 .peer/harness/peer_accuracy.py --experts /tmp/ws/experts/cifar10-zca --dataset cifar10-zca --expert-epochs 2 --lr-teacher 0.01 $A --device cuda --seed $s --out /tmp/ws/s/ref$s > /tmp/ws/s/ref$s.log 2>&1 &
done
wait
touch /tmp/ws/s/done

#!/bin/bash
# One-off GPU bisection of the IPC-10 MTT gap: alpha trajectories of ours (graphs on/off, seed 1) beside the reference.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 GALAXY_DISTILL_HOME=/tmp/ws
mkdir -p /tmp/ws/b
python3 /tmp/c10/to_python_format.py /tmp/c10py
python3 -m galaxy_distill.cli data prepare cifar10 --root /tmp/c10py --zca --name cifar10-zca
python3 -m galaxy_distill.cli experts --dataset cifar10-zca --num-experts 10 --epochs 22 --batch-size 256 \
    --compile --precision bf16-full --test-every 22 --out /tmp/ws/experts/cifar10-zca 2>&1 | grep -v "expert-epochs"
A="--ipc 10 --syn-steps 30 --max-start-epoch 20 --lr-img 1e5 --lr-lr 1e-5 --iterations 150"
D="python3 -m galaxy_distill.cli distill --dataset cifar10-zca --experts /tmp/ws/experts/cifar10-zca --method mtt --expert-epochs 2 --lr-init 0.01 --eval-every 150 --eval-nets 1 --eval-epochs 20 $A"
$D --out /tmp/ws/b/graphs > /tmp/ws/b/graphs.log 2>&1 &
$D --no-cuda-graphs --out /tmp/ws/b/eager > /tmp/ws/b/eager.log 2>&1 &
$D --seed 1 --out /tmp/ws/b/seed1 > /tmp/ws/b/seed1.log 2>&1 &
python3 .peer/harness/peer_accuracy.py --experts /tmp/ws/experts/cifar10-zca --dataset cifar10-zca --expert-epochs 2 --lr-teacher 0.01 $A --device cuda --out /tmp/ws/b/ref > /tmp/ws/b/ref.log 2>&1 &
wait
for r in graphs eager seed1 ref; do python3 - "$r" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(f"/tmp/ws/b/{sys.argv[1]}/metrics.csv")))
print(sys.argv[1], " ".join(f"{r['iteration']}:{float(r['step_size']):.5f}/{float(r['loss']):.3f}" for r in rows if int(r["iteration"]) in (1, 5, 10, 20, 30, 50, 75, 100, 125, 150)))
PY
done

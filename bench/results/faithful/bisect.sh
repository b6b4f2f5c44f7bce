#!/bin/bash
# One-off GPU bisection of the IPC-10 MTT gap: step-size (alpha) and loss trajectories of ours under one change each
# (CUDA graphs off, seed 1, TF32 off, augmentation off) beside the reference loop (with and without its augmentation).
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 GALAXY_DISTILL_HOME=/tmp/ws
B=/tmp/ws/b; F=bench/results/faithful
mkdir -p $B
python3 /tmp/c10/to_python_format.py /tmp/c10py
python3 -m galaxy_distill.cli data prepare cifar10 --root /tmp/c10py --zca --name cifar10-zca
python3 -m galaxy_distill.cli experts --dataset cifar10-zca --num-experts 10 --epochs 22 --batch-size 256 \
    --compile --precision bf16-full --test-every 22 --out /tmp/ws/experts/cifar10-zca 2>&1 | grep -v "expert-epochs"
A="--ipc 10 --syn-steps 30 --max-start-epoch 20 --lr-img 1e5 --lr-lr 1e-5 --iterations ${ITERATIONS:-100}"
O="distill --dataset cifar10-zca --experts /tmp/ws/experts/cifar10-zca --method mtt --expert-epochs 2 --lr-init 0.01 --eval-every 1000 --eval-networks 1 --eval-epochs 20 $A"
R="--experts /tmp/ws/experts/cifar10-zca --dataset cifar10-zca --expert-epochs 2 --lr-teacher 0.01 $A --device cuda"
python3 -m galaxy_distill.cli $O --out $B/graphs > $B/graphs.log 2>&1 &
python3 -m galaxy_distill.cli $O --no-cuda-graphs --out $B/eager > $B/eager.log 2>&1 &
python3 -m galaxy_distill.cli $O --seed 1 --out $B/seed1 > $B/seed1.log 2>&1 &
python3 $F/ours_no_tf32.py $O --out $B/no_tf32 > $B/no_tf32.log 2>&1 &
python3 -m galaxy_distill.cli $O --augment none --out $B/no_augment > $B/no_augment.log 2>&1 &
python3 .peer/harness/peer_accuracy.py $R --out $B/ref > $B/ref.log 2>&1 &
python3 $F/ref_no_augment.py $R --out $B/ref_no_augment > $B/ref_no_augment.log 2>&1 &
wait
for r in graphs eager seed1 no_tf32 no_augment ref ref_no_augment; do python3 - "$r" <<'PY'
import csv, sys
try:
    rows = list(csv.DictReader(open(f"/tmp/ws/b/{sys.argv[1]}/metrics.csv")))
except OSError as exc:
    sys.exit(f"{sys.argv[1]}: {exc}")
print(f"{sys.argv[1]:>15}", " ".join(f"{r['iteration']}:{float(r['step_size']):.5f}/{float(r['loss']):.3f}"
                                      for r in rows if int(r["iteration"]) in (1, 5, 10, 20, 30, 50, 75, 100, 150)))
PY
done
touch $B/done

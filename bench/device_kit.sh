#!/bin/bash
# Builds the git-ignored folders that device calls carry; they do not outlive a session, so build them at its start.
#
#   bash bench/device_kit.sh [MTT_GIT_DIR]
#
#   .whl/            pydantic and its dependencies as wheels for the device's Python 3.12 (its image lacks them)
#   .carry/c10a,b,c  CIFAR-10's lossless WebP parts from ../shared/data/cifar10, two 17 MB parts per call (64 MiB a call)
#   .peer/harness/   the reference-loop harness (../shared/peer)
#   .peer/mtt/       with MTT_GIT_DIR (a clone or mirror of GeorgeCazenavette/mtt-distillation, e.g. what the `fetch`
#                    tool returns): the reference's networks.py, reparam_module.py and utils.py at the revision the
#                    harness was written against, utils.py's imports patched as ../shared/peer/README.md says
# Never commit these folders (.gitignore ignores all three).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}

rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0

rm -rf .carry/c10a .carry/c10b .carry/c10c && mkdir -p .carry/c10a .carry/c10b .carry/c10c
D=$SHARED/data/cifar10
cp "$D"/train_0.webp "$D"/train_1.webp .carry/c10a/
cp "$D"/train_2.webp "$D"/train_3.webp .carry/c10b/
cp "$D"/train_4.webp "$D"/test_0.webp "$D"/*.npy "$D"/manifest.json "$D"/to_python_format.py .carry/c10c/

rm -rf .peer/harness && mkdir -p .peer/harness && cp "$SHARED"/peer/*.py .peer/harness/
# The harness was written before store.py became atomic_io.py.
sed -i 's/from galaxy_distill.store import/from galaxy_distill.atomic_io import/' .peer/harness/*.py
if [ $# -ge 1 ]; then
  REV=50dccea47ba48b9cfb3b9c59375d7da92e4e603b   # the revision ../shared/peer names
  git --git-dir="$1" cat-file -e "$REV^{commit}" 2>/dev/null || REV=HEAD
  rm -rf .peer/mtt && mkdir -p .peer/mtt
  for f in networks.py reparam_module.py utils.py; do git --git-dir="$1" show "$REV:$f" > ".peer/mtt/$f"; done
  git --git-dir="$1" rev-parse "$REV" > .peer/mtt/REVISION
  python3 - <<'PY'
from pathlib import Path

path = Path(".peer/mtt/utils.py")
text = path.read_text()
for before, after in [
    ("import kornia as K\n", "try:\n    import kornia as K\nexcept ImportError:\n    K = None\n"),
    ("from torchvision import datasets, transforms\n",
     "try:\n    from torchvision import datasets, transforms\nexcept ImportError:\n    datasets = transforms = None\n"),
    # newer SciPy dropped the scipy.ndimage.interpolation module; the function is the same
    ("from scipy.ndimage.interpolation import rotate as scipyrotate", "from scipy.ndimage import rotate as scipyrotate"),
]:
    if before not in text:
        raise SystemExit(f"{path}: expected {before.strip()!r}; is this the reference's utils.py?")
    text = text.replace(before, after, 1)
path.write_text(text)
PY
fi
git rev-parse HEAD > .peer/REVISION 2>/dev/null || true
du -sh .whl .carry/c10a .carry/c10b .carry/c10c .peer

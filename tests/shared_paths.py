"""Where the project's real data lives: ../shared/data beside the repository root (also in CI)."""

from pathlib import Path

SHARED_DATA = Path(__file__).parents[1].parent / "shared" / "data"
GZ1_ROOT = SHARED_DATA / "gz1_sdss"
CIFAR10_SCRIPT = SHARED_DATA / "cifar10" / "to_python_format.py"

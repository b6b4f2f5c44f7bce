"""Whether torch.compile can build kernels on this CPU (the compiled-step tests need it)."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

CAN_COMPILE_ON_CPU = bool((shutil.which("g++") or shutil.which("c++")) and (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file())

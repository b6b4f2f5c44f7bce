"""Where real data is looked for when no --root is given."""

from __future__ import annotations

import os
from pathlib import Path

from galaxy_distill.errors import GalaxyDistillError

DATA_ENV = "GALAXY_DISTILL_DATA"


def default_root(subdir: str, dataset: str, layout: str) -> Path:
    """The first of $GALAXY_DISTILL_DATA/<subdir>, ./shared/data/<subdir>, ../shared/data/<subdir> that exists."""
    bases = [Path(os.environ[DATA_ENV])] if os.environ.get(DATA_ENV) else []
    # An editable install also finds the data beside its own checkout, from any working directory.
    checkout = Path(__file__).resolve().parents[3]
    bases += [Path("shared/data"), Path("../shared/data"), checkout / "shared" / "data", checkout.parent / "shared" / "data"]
    for base in bases:
        if (base / subdir).is_dir():
            return base / subdir
    looked = ", ".join(str(base / subdir) for base in bases)
    raise GalaxyDistillError(
        f"no data for '{dataset}' found (looked in {looked}); pass --root DIR where DIR holds {layout}"
    )


def require_dir(path: Path, layout: str) -> Path:
    if not path.is_dir():
        raise GalaxyDistillError(f"{path}: directory not found; expected {layout}")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise GalaxyDistillError(f"{path}: file not found; expected {what}")
    return path

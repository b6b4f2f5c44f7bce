"""Settings of `galaxy-distill data prepare` (kept free of heavy imports: the command line reads them for --help)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from galaxy_distill.settings import Settings

DATASET_NAMES = ("gz1-sdss", "gz2", "simzoo", "cifar10", "cifar100", "folder")


class PrepareSettings(Settings):
    """Settings of `galaxy-distill data prepare`. None means "the dataset's own default"."""

    dataset: str = Field(description=f"which dataset to build: {', '.join(DATASET_NAMES)}")
    root: Path | None = Field(None, description="directory holding the source files (default: the dataset's folder under "
                              "$GALAXY_DISTILL_DATA, ./shared/data or ../shared/data; `folder` needs it)")
    name: str | None = Field(None, description="name to store the prepared set under, so that several versions can "
                             "coexist (default: the dataset's name)")
    size: int | None = Field(None, ge=8, le=512, description="side of the square images in pixels, 8 to 512 "
                             "(default: 32 for cifar10/cifar100, 128 for the others)")
    crop_fraction: float | None = Field(None, gt=0.0, le=1.0, description="central fraction of each source image kept "
                                        "before resizing, above 0 up to 1 (default: 0.5 for gz1-sdss and gz2, 1 for the others)")
    per_class: int | None = Field(None, ge=2, description="images per class, chosen at random so that the classes are "
                                  "balanced, at least 2 (default: 600 for gz2, 100 for simzoo, otherwise as many as the "
                                  "smallest class has)")
    test_fraction: float | None = Field(None, ge=0.0, lt=1.0, description="share of each class held out as the test split "
                                        "(default: 1/6 for gz2, 0.1 for gz1-sdss, simzoo and folder; CIFAR brings its own)")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of each class's remaining images held out as the "
                                "validation split, which selects the distillation checkpoint")
    seed: int = Field(0, description="random seed of the class balancing, the splits and SimZoo's simulation")
    rotations: int = Field(1, ge=1, le=72, description="K copies of every training image rotated by multiples of "
                           "360/K degrees (1: no rotation augmentation)")
    zca: bool = Field(False, description="ZCA-whiten the images (as MTT does for CIFAR)")
    zca_regularization: float = Field(0.1, gt=0.0, description="regularisation added to the eigenvalues in ZCA whitening")
    skip_bad_images: bool = Field(False, description="leave out unreadable image files (each named in the notes) instead "
                                  "of stopping at the first one")
    include_merger: bool = Field(False, description="gz1-sdss: add the merger class to elliptical, spiral and edge-on")
    gz2_source: Literal["auto", "hart16", "kaggle"] = Field(
        "auto", description="gz2: which catalogue to read (auto: whichever is found, hart16 first)")
    min_votes: int = Field(20, ge=0, description="gz2: least number of volunteer votes a galaxy needs to be used")
    test_root: Path | None = Field(None, description="folder: a second directory of class folders used whole as the "
                                   "test split (default: the test split is held out from --root)")
    workers: int | None = Field(None, ge=1, description="threads (processes for simzoo) reading or simulating images "
                                "(default: the number of CPU cores, at most 8)")

    @property
    def stored_name(self) -> str:
        return self.name or self.dataset

"""Does each distilled prototype carry the features that define its class?

Each GZ2 class is told apart from its sibling(s) in the Galaxy Zoo 2 decision tree by measurable
features (DEFINING_FEATURES): a barred disk without arms differs from an unbarred one by its bar
and from a barred spiral by having no arms, so both are checked. Each feature is measured
(data.morphology) on the prototypes and on the real images of the class and of its contrast
classes. A prototype carries a feature when its value is closer to its own class's real mean than
to the real mean of every contrast class, i.e. it lies on its own class's side of each midpoint;
it carries its class when it carries every one of the class's features. An exaggerated feature
(a bar stronger than any real one) therefore counts as carried.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from galaxy_distill.data.morphology import measure
from galaxy_distill.errors import GalaxyDistillError


@dataclass(frozen=True)
class DefiningFeature:
    measurement: str
    contrast_classes: tuple[str, ...]
    description: str


_BAR_OVER_UNBARRED_SPIRAL = DefiningFeature("bar_strength", ("unbarred-spiral",), "a bar: stronger inner m=2 than unbarred spirals")
_BAR_OVER_UNBARRED_DISK = DefiningFeature("bar_strength", ("unbarred-no-spiral",),
                                          "a bar: stronger inner m=2 than unbarred featureless disks")
DEFINING_FEATURES: dict[str, tuple[DefiningFeature, ...]] = {
    "smooth-round": (DefiningFeature("axis_ratio", ("smooth-in-between",), "rounder than in-between smooth galaxies"),),
    "smooth-in-between": (DefiningFeature("axis_ratio", ("smooth-round", "smooth-cigar"),
                                          "flatter than round, rounder than cigar-shaped smooth galaxies"),),
    "smooth-cigar": (DefiningFeature("axis_ratio", ("smooth-in-between",), "flatter than in-between smooth galaxies"),),
    "edge-on-bulge": (DefiningFeature("concentration", ("edge-on-no-bulge",),
                                      "a central bulge: light more concentrated than a bulgeless edge-on disk's"),),
    "edge-on-no-bulge": (DefiningFeature("concentration", ("edge-on-bulge",),
                                         "no bulge: light less concentrated than a bulged edge-on disk's"),),
    "barred-spiral": (_BAR_OVER_UNBARRED_SPIRAL,
                      DefiningFeature("arm_strength", ("barred-no-spiral",),
                                      "spiral arms: more outer non-axisymmetric light than barred disks without arms")),
    "barred-no-spiral": (_BAR_OVER_UNBARRED_DISK,
                         DefiningFeature("arm_strength", ("barred-spiral",),
                                         "no arms: less outer non-axisymmetric light than barred spirals")),
    "unbarred-spiral": (DefiningFeature("arm_strength", ("unbarred-no-spiral",),
                                        "spiral arms: more outer non-axisymmetric light than disks without arms"),
                        DefiningFeature("bar_strength", ("barred-spiral",), "no bar: weaker inner m=2 than barred spirals")),
    "unbarred-no-spiral": (DefiningFeature("arm_strength", ("unbarred-spiral",),
                                           "no arms: less outer non-axisymmetric light than spiral disks"),
                           DefiningFeature("bar_strength", ("barred-no-spiral",),
                                           "no bar: weaker inner m=2 than barred disks without arms")),
}
"""Class -> the features that separate it from each of its Galaxy Zoo 2 sibling classes."""


def _check_images(images: np.ndarray, labels: np.ndarray, class_count: int, what: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise GalaxyDistillError(f"{what}: expected uint8 NHWC images, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise GalaxyDistillError(f"{what}: {len(images)} images but labels of shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= class_count):
        raise GalaxyDistillError(f"{what}: labels must lie in 0..{class_count - 1}")


def _carries(value: float, own: float, contrasts: dict[str, float]) -> bool:
    return all(abs(value - own) < abs(value - other) for other in contrasts.values())


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def ground_truth_check(
    prototypes: np.ndarray,
    prototype_labels: np.ndarray,
    real_images: np.ndarray,
    real_labels: np.ndarray,
    class_names: list[str],
) -> dict[str, Any]:
    """Per class: does the prototype set carry the class's defining features? A JSON-serialisable dict.

    `classes[name]["features"]` holds, per feature, the mean of the class's prototypes (prototype_value),
    the real means of the class and of its contrast classes, `carried` for that mean and `carried_fraction`
    over the individual prototypes; `classes[name]["carried"]` is whether every feature is carried, and its
    `carried_fraction` the share of prototypes that carry all of them. Classes without a known defining
    feature, without prototypes, or whose contrast classes are absent are listed in `skipped` with the reason.
    """
    prototype_labels = np.asarray(prototype_labels)
    real_labels = np.asarray(real_labels)
    _check_images(prototypes, prototype_labels, len(class_names), "prototypes")
    _check_images(real_images, real_labels, len(class_names), "real images")
    prototype_features = measure(prototypes)
    real_features = measure(real_images)

    def real_mean(measurement: str, class_name: str) -> float:
        return float(np.nanmean(real_features[measurement][real_labels == class_names.index(class_name)]))

    classes: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    present = {name for k, name in enumerate(class_names) if (real_labels == k).any()}
    for k, name in enumerate(class_names):
        features = DEFINING_FEATURES.get(name)
        if features is None:
            skipped[name] = "no defining feature is known for this class"
            continue
        needed = dict.fromkeys(c for feature in features for c in (name, *feature.contrast_classes))
        missing = [c for c in needed if c not in present]
        if missing:
            skipped[name] = f"no real images of {', '.join(missing)}"
            continue
        mine = prototype_labels == k
        if not mine.any():
            skipped[name] = "no prototypes of this class"
            continue
        checks = []
        carried_by_each = np.ones(int(mine.sum()), dtype=bool)
        for feature in features:
            values = prototype_features[feature.measurement][mine]
            own = real_mean(feature.measurement, name)
            contrasts = {c: real_mean(feature.measurement, c) for c in feature.contrast_classes}
            value = float(np.nanmean(values))
            each = np.array([_carries(float(v), own, contrasts) for v in values])
            carried_by_each &= each
            checks.append({
                "feature": feature.measurement,
                "description": feature.description,
                "prototype_value": _json_number(value),
                "own_class_mean": _json_number(own),
                "contrast_class_means": {c: _json_number(v) for c, v in contrasts.items()},
                "carried": _carries(value, own, contrasts),
                "carried_fraction": float(each.mean()),
            })
        classes[name] = {
            "features": checks,
            "prototype_count": int(mine.sum()),
            "carried": all(check["carried"] for check in checks),
            "carried_fraction": float(carried_by_each.mean()),
        }
    return {
        "rule": "a feature is carried when the prototypes' mean value is closer to its own class's real mean than to each "
                "contrast class's; a class is carried when every one of its features is",
        "classes": classes,
        "carried_count": sum(result["carried"] for result in classes.values()),
        "checked_count": len(classes),
        "skipped": skipped,
    }

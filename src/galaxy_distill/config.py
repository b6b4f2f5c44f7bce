"""Settings for every command: a YAML file, overridden by command-line flags, validated by pydantic.

The resolved settings are saved beside every output so a run can be repeated exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.store import read_yaml

SettingsT = TypeVar("SettingsT", bound="Settings")

WORKSPACE_ENV = "GALAXY_DISTILL_HOME"


class Settings(BaseModel):
    """Base of every command's settings: unknown keys and non-finite numbers are errors, never silently used."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    retired: ClassVar[frozenset[str]] = frozenset()
    """Settings that earlier versions stored and that never changed an output's meaning: ignored when resuming."""


def resolve_settings(
    settings_type: type[SettingsT], config_file: Path | None, overrides: dict[str, Any]
) -> SettingsT:
    """Merge a YAML file with the flags that were actually given (None = not given) and validate."""
    values: dict[str, Any] = read_yaml(config_file) if config_file is not None else {}
    values.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return settings_type.model_validate(values)
    except ValidationError as exc:
        where = f"{config_file}: " if config_file is not None else ""
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise GalaxyDistillError(f"{where}invalid settings for {settings_type.__name__} ({problems})") from None


def settings_differences(settings_type: type[Settings], stored: Any, resolved: dict[str, Any]) -> list[str]:
    """How settings stored with an output differ from these, as "name: stored -> now" lines.

    A setting the stored file lacks counts as its default: outputs made before a version added a
    setting are resumed as long as the new setting keeps its default.
    """
    if not isinstance(stored, dict):
        return ["the stored settings are not a JSON object"]
    defaults = {name: json.loads(json.dumps(field.default, default=str))
                for name, field in settings_type.model_fields.items() if not field.is_required()}
    differences = []
    for name, value in resolved.items():
        before = stored[name] if name in stored else defaults.get(name, value)
        if before != value:
            differences.append(f"{name}: {before!r} there, {value!r} now")
    differences += [f"{name}: unknown setting there" for name in stored if name not in resolved
                    and name not in settings_type.retired]
    return differences


def workspace_dir() -> Path:
    """Where prepared datasets, experts and runs live unless a path is given explicitly."""
    return Path(os.environ.get(WORKSPACE_ENV, "galaxy_distill_work"))

"""Settings for every command: a YAML file, overridden by command-line flags, validated by pydantic.

The resolved settings are saved beside every output so a run can be repeated exactly.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from galaxy_distill.errors import GalaxyDistillError

SettingsT = TypeVar("SettingsT", bound="Settings")

WORKSPACE_ENV = "GALAXY_DISTILL_HOME"


class Settings(BaseModel):
    """Base of every command's settings: unknown keys and non-finite numbers are errors, never silently used."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    retired: ClassVar[frozenset[str]] = frozenset()
    free_on_resume: ClassVar[frozenset[str]] = frozenset()
    """Settings that only say when a run stops: a resumed run may change them without changing what it computes."""
    """Settings that earlier versions stored and that never changed an output's meaning: ignored when resuming."""
    renamed: ClassVar[dict[str, str]] = {}
    """Earlier name -> today's name of a setting: still read from stored settings and YAML files, with a warning."""

    @classmethod
    def upgrade_names(cls, values: Any, where: str) -> Any:
        """`values` (a dict of settings) with earlier names replaced by today's, one warning line per earlier name.

        A value given under both names keeps today's. `where` says in the warning whose settings these are.
        """
        if not isinstance(values, dict) or not cls.renamed.keys() & values.keys():
            return values
        upgraded = {}
        for name, value in values.items():
            new = cls.renamed.get(name)
            if new is None:
                upgraded[name] = value
                continue
            print(f"warning: {where}: setting '{name}' is now called '{new}' ({flag_name(new)}); read as {new}",
                  file=sys.stderr)
            if new not in values:
                upgraded[new] = value
        return upgraded

    @model_validator(mode="before")
    @classmethod
    def _earlier_names(cls, values: Any) -> Any:
        return cls.upgrade_names(values, cls.__name__)


def resolve_settings(
    settings_type: type[SettingsT], config_file: Path | None, overrides: dict[str, Any]
) -> SettingsT:
    """Merge a YAML file with the flags that were actually given (None = not given) and validate.

    A bad value is reported as the user gave it: the flag and its value, or the file and its key.
    """
    from galaxy_distill.atomic_io import read_yaml  # atomic_io imports torch, which `--help` should not wait for

    from_file: dict[str, Any] = read_yaml(config_file) if config_file is not None else {}
    from_file = settings_type.upgrade_names(from_file, str(config_file))
    flags = {key: value for key, value in overrides.items() if value is not None}
    try:
        return settings_type.model_validate({**from_file, **flags})
    except ValidationError as exc:
        problems = "; ".join(_problem(error, flags, config_file, settings_type) for error in exc.errors())
        raise GalaxyDistillError(problems) from None


def flag_name(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def _problem(error: Any, flags: dict[str, Any], config_file: Path | None, settings_type: type[Settings]) -> str:
    """One pydantic error in the user's terms: which flag (or file key), what was given, what is allowed."""
    setting = str(error["loc"][0]) if error["loc"] else None
    message = error["msg"].removeprefix("Value error, ")
    message = message.replace("Input should be", "must be").replace("input should be", "must be")
    if setting is None:
        return message
    if error["type"] == "missing":
        in_file = f" (or `{setting}:` in {config_file})" if config_file is not None else ""
        return f"{flag_name(setting)} is required{in_file}"
    if error["type"] == "extra_forbidden":
        known = ", ".join(settings_type.model_fields)
        return f"{config_file}: unknown setting '{setting}' (known: {known})"
    given = error.get("input")
    shown = " ".join(map(str, given)) if isinstance(given, list) else given
    if setting in flags:
        return f"{flag_name(setting)} {shown}: {message}"
    return f"{config_file}: {setting}: {given!r}: {message}"


def settings_differences(settings_type: type[Settings], stored: Any, resolved: dict[str, Any],
                         where: str = "stored settings") -> list[str]:
    """How settings stored with an output differ from these, as "name: stored -> now" lines.

    A setting the stored file lacks counts as its default: outputs made before a version added a
    setting are resumed as long as the new setting keeps its default. A setting stored under an
    earlier name (Settings.renamed) counts as today's, with a warning naming `where` it was read.
    """
    if not isinstance(stored, dict):
        return ["the stored settings are not a JSON object"]
    stored = settings_type.upgrade_names(stored, where)
    defaults = {name: json.loads(json.dumps(field.default, default=str))
                for name, field in settings_type.model_fields.items() if not field.is_required()}
    differences = []
    for name, value in resolved.items():
        if name in settings_type.free_on_resume:
            continue
        before = stored[name] if name in stored else defaults.get(name, value)
        if before != value:
            differences.append(f"{name}: {before!r} there, {value!r} now")
    differences += [f"{name}: unknown setting there" for name in stored if name not in resolved
                    and name not in settings_type.retired]
    return differences


def workspace_dir() -> Path:
    """Where prepared datasets, experts and runs live unless a path is given explicitly."""
    return Path(os.environ.get(WORKSPACE_ENV, "galaxy_distill_work"))

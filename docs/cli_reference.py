"""The CLI reference section of docs/guide.md, rendered from the typer app itself so that it cannot drift.

    python docs/cli_reference.py                        # print the reference (markdown)
    python docs/cli_reference.py --write docs/guide.md  # rewrite the block between the markers
    python docs/cli_reference.py --check docs/guide.md  # exit 1 if that block is not what the app renders

Every command and sub-command of `galaxy_distill.cli.app`, each option with its name, type or choices, default and help
text, walked through click's parameters (`typer.main.get_command(app)`). Run it with the package importable
(`pip install -e .`, or `PYTHONPATH=src`).
"""

from __future__ import annotations

import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

START = "<!-- cli-reference:start -->"
END = "<!-- cli-reference:end -->"
PROGRAM = "galaxy-distill"

_DEFAULT_IN_HELP = re.compile(r"\s*\[default: (?P<value>[^\]]*)\]\s*$")


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _annotation_name(annotation: Any) -> str:
    """'int', 'path', 'text', ... for an option's Python annotation (Optional and list unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        parts = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _annotation_name(parts[0]) if len(parts) == 1 else " or ".join(_annotation_name(a) for a in parts)
    if origin is list:
        return _annotation_name(typing.get_args(annotation)[0]) + " (repeatable)"
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _annotation_name(typing.get_args(annotation)[0])
    names = {str: "text", int: "int", float: "float", bool: "flag", Path: "path"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)).lower())


def _type(param: Any) -> str:
    """An option's type or choices as the reference shows it."""
    if getattr(param, "is_flag", False):
        return "flag"
    metavar = getattr(param, "metavar", None)
    if metavar:
        if metavar.startswith("[") and metavar.endswith("]") and "|" in metavar:
            return "one of " + ", ".join(f"`{choice}`" for choice in metavar[1:-1].split("|"))
        return metavar.strip("<>")
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", None)
    name = _annotation_name(annotation) if annotation is not None else "text"
    if getattr(param, "multiple", False) and "repeatable" not in name:
        name += " (repeatable)"
    return name


def _default_and_help(param: Any) -> tuple[str, str]:
    """(default, help) of a parameter: a '[default: X]' at the end of the help text is moved to the default column."""
    help_text = " ".join((getattr(param, "help", None) or "").split())
    match = _DEFAULT_IN_HELP.search(help_text)
    if match:
        return f"`{match.group('value')}`", help_text[: match.start()]
    if getattr(param, "required", False):
        return "required", help_text
    default = getattr(param, "default", None)
    if default is None or default == () or default == []:
        return "—", help_text
    if isinstance(default, bool):
        flag = param.opts[0] if default else (param.secondary_opts or [f"no {param.opts[0]}"])[0]
        return f"`{flag}`", help_text
    return f"`{default}`", help_text


def _names(param: Any) -> str:
    if getattr(param, "param_type_name", "") == "argument":
        return f"`{param.name.upper()}` (argument)"
    return " / ".join(f"`{name}`" for name in [*param.opts, *getattr(param, "secondary_opts", [])])


def _commands(group: Any, prefix: str) -> list[tuple[str, Any]]:
    """(full command line, click command) for every leaf command under `group`, in the app's order."""
    found = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if hasattr(command, "commands"):
            found += _commands(command, path)
        else:
            found.append((path, command))
    return found


def render() -> str:
    """The markdown reference of every command of the app (without the markers)."""
    import typer.main

    from galaxy_distill.cli import app

    root = typer.main.get_command(app)
    lines = [f"Generated from the command-line app by `python docs/cli_reference.py --write docs/guide.md`; "
             f"`{PROGRAM} COMMAND --help` prints the same. Every command also takes `--help`; "
             f"`{PROGRAM} --version` prints the version. An option not given takes its value in "
             "`--config FILE.yaml`, else the default shown.", ""]
    for path, command in _commands(root, PROGRAM):
        summary = " ".join((command.help or "").split("\n\n")[0].split())
        lines += [f"### `{path}`", "", summary, ""]
        params = [p for p in command.params if not getattr(p, "hidden", False) and p.name != "help"]
        if not params:
            lines += ["No options.", ""]
            continue
        lines += ["| option | type | default | description |", "| --- | --- | --- | --- |"]
        for param in params:
            default, help_text = _default_and_help(param)
            lines.append(f"| {_cell(_names(param))} | {_cell(_type(param))} | {_cell(default)} | {_cell(help_text)} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def replace_block(document: str, reference: str) -> str:
    """`document` with the text between the markers replaced by `reference`."""
    if START not in document or END not in document:
        raise SystemExit(f"cli_reference.py: the markers {START} and {END} are missing")
    head, rest = document.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{reference}{END}{tail}"


def main(argv: list[str]) -> int:
    if not argv:
        sys.stdout.write(render())
        return 0
    if len(argv) != 2 or argv[0] not in ("--write", "--check"):
        sys.stderr.write(__doc__)
        return 2
    path = Path(argv[1])
    document = path.read_text()
    updated = replace_block(document, render())
    if argv[0] == "--write":
        if updated != document:
            path.write_text(updated)
        print(f"{path}: CLI reference {'rewritten' if updated != document else 'already current'}")
        return 0
    if updated != document:
        sys.stderr.write(f"{path}: the CLI reference is stale (the command-line options changed); "
                         f"regenerate it with: python docs/cli_reference.py --write {path}\n")
        return 1
    print(f"{path}: CLI reference is current")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

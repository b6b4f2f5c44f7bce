"""The user documents stay true to the code: the CLI reference in docs/guide.md is what the app renders, no document
carries git revisions, and every relative link points to a file that exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
CLI_REFERENCE = ROOT / "docs" / "cli_reference.py"

HASH_LIKE = re.compile(r"(?<![0-9A-Za-z_./-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}(?![0-9A-Za-z_])")
"""A token of 7-40 lower-case hex digits with at least one letter and one digit: what a git revision looks like."""

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _run_reference(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(CLI_REFERENCE), *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_the_cli_reference_in_the_guide_is_what_the_app_renders() -> None:
    result = _run_reference("--check", "docs/guide.md")
    assert result.returncode == 0, result.stderr + result.stdout


def test_the_cli_reference_lists_every_command_and_option(tmp_path: Path) -> None:
    from typer.main import get_command

    from galaxy_distill.cli import app

    guide = (ROOT / "docs" / "guide.md").read_text()
    block = guide.split("<!-- cli-reference:start -->", 1)[1].split("<!-- cli-reference:end -->", 1)[0]
    root = get_command(app)
    groups = [("galaxy-distill", root)]
    while groups:
        prefix, group = groups.pop()
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                groups.append((f"{prefix} {name}", command))
                continue
            assert f"### `{prefix} {name}`" in block
            for param in command.params:
                if param.param_type_name == "option":
                    assert f"`{param.opts[0]}`" in block, (name, param.opts[0])


def test_a_stale_cli_reference_is_reported_with_the_command_that_fixes_it(tmp_path: Path) -> None:
    stale = tmp_path / "guide.md"
    stale.write_text("# Guide\n\n<!-- cli-reference:start -->\nold text\n<!-- cli-reference:end -->\n\nafter\n")
    result = _run_reference("--check", str(stale))
    assert result.returncode == 1
    assert "stale" in result.stderr and f"--write {stale}" in result.stderr
    assert _run_reference("--write", str(stale)).returncode == 0
    written = stale.read_text()
    assert "old text" not in written and "### `galaxy-distill distill`" in written and written.endswith("\n\nafter\n")
    assert _run_reference("--check", str(stale)).returncode == 0


def test_no_document_carries_a_git_revision() -> None:
    found = {}
    for document in DOCUMENTS:
        for number, line in enumerate(document.read_text().splitlines(), 1):
            if tokens := HASH_LIKE.findall(line):
                found[f"{document.relative_to(ROOT)}:{number}"] = tokens
    assert not found, f"git-hash-like tokens (the docs describe the current code, git keeps history): {found}"


def test_the_hash_pattern_catches_revisions_and_spares_numbers_and_words() -> None:
    assert HASH_LIKE.findall("revision 7e4ef0f and 88fe38b35aed2666389c1ad35f1353dd19cd7a30")
    assert not HASH_LIKE.findall("0.0105 / 2,064 / 1234567 / deadbeef / conv_3x3 / cifar10_ipc10 / 1e-5 / sha256")


def test_every_relative_link_points_to_an_existing_file() -> None:
    broken = []
    for document in DOCUMENTS:
        for target in LINK.findall(document.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (document.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{document.relative_to(ROOT)} -> {target}")
    assert not broken, f"links to missing files: {broken}"

"""One self-contained HTML page: inline CSS, images embedded as base64, no script, no external request."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from galaxy_distill.atomic_io import atomic_write_bytes

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1320px; padding: 1em 2em;
       color: #1f2328; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; margin-top: 2em; }
h3 { margin-bottom: 0.3em; }
nav ol { columns: 3; font-size: 0.95em; }
figure { margin: 0.8em 0; } .row { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
.row figure { flex: 0 1 auto; max-width: 48%; } figcaption { font-size: 0.88em; color: #57606a; max-width: 1100px; }
img { max-width: 100%; height: auto; } img.pixels { image-rendering: pixelated; }
img.animation { border: 1px solid #d0d7de; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } caption { caption-side: top; text-align: left; font-size: 0.88em; color: #57606a; } td.number { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.note { background: #fff8c5; border-left: 4px solid #d4a72c; padding: 0.4em 0.8em; margin: 0.6em 0; font-size: 0.92em; }
.summary { background: #f6f8fa; padding: 0.6em 1em; border-radius: 6px; }
details { margin: 0.6em 0; } summary { cursor: pointer; font-weight: 600; }
code { background: #f6f8fa; padding: 0 0.25em; border-radius: 3px; }
"""


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def file_stem(text: str) -> str:
    """A file-name-safe version of a class name."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "class"


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def paragraph(text: str) -> str:
    return f"<p>{escape(text)}</p>"


def _lines(text: str) -> str:
    return "<br>".join(escape(line) for line in text.split("\n"))


@dataclass(frozen=True)
class Cell:
    """A table cell (newlines become line breaks); numbers are right-aligned."""

    text: str
    number: bool = False


def table(headers: Sequence[str] | None, rows: Sequence[Sequence[Cell | str]], caption: str = "") -> str:
    """An HTML table; headers None gives a key-value table without a header row."""
    head = "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr></thead>" if headers else ""
    body = []
    for row in rows:
        cells = (cell if isinstance(cell, Cell) else Cell(cell) for cell in row)
        body.append("<tr>" + "".join(f'<td class="number">{_lines(c.text)}</td>' if c.number else f"<td>{_lines(c.text)}</td>"
                                     for c in cells) + "</tr>")
    caption_html = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{caption_html}{head}<tbody>{''.join(body)}</tbody></table>"


def side_by_side(*items: str) -> str:
    return f'<div class="row">{"".join(items)}</div>'


@dataclass(frozen=True)
class Section:
    anchor: str
    title: str
    body: str


class ReportFiles:
    """The report directory: each figure is written as a file and embedded in the page."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.written: list[Path] = []

    def image(self, name: str, data: bytes, caption: str, css_class: str = "") -> str:
        """Write `name` (.png or .gif) and return a <figure> embedding it."""
        mime = {".png": "image/png", ".gif": "image/gif"}[Path(name).suffix]
        path = self.directory / name
        atomic_write_bytes(path, data)
        self.written.append(path)
        encoded = base64.b64encode(data).decode("ascii")
        class_attribute = f' class="{css_class}"' if css_class else ""
        return (f'<figure><img{class_attribute} src="data:{mime};base64,{encoded}" alt="{escape(caption)}">'
                f"<figcaption>{escape(caption)}</figcaption></figure>")


def render_page(title: str, subtitle: str, summary: str, sections: Sequence[Section]) -> str:
    contents = "".join(f'<li><a href="#{s.anchor}">{escape(s.title)}</a></li>' for s in sections)
    body = "".join(f'<section id="{s.anchor}"><h2>{escape(s.title)}</h2>{s.body}</section>' for s in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1><p>{escape(subtitle)}</p>"
        f'<div class="summary">{summary}</div>'
        f"<nav><h2>Contents</h2><ol>{contents}</ol></nav>{body}</body></html>\n"
    )

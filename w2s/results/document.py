"""A small document model (headings, paragraphs, tables, images, preformatted text) rendered both as
Markdown and as one self-contained HTML page, so that `w2s report` writes the two from one source
and `w2s compare` prints the same tables it writes."""
from __future__ import annotations

import base64
import dataclasses
import html
import pathlib


@dataclasses.dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclasses.dataclass(frozen=True)
class Text:
    text: str


@dataclasses.dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]
    names: int = 1  # the first `names` columns are left-aligned text, the rest right-aligned numbers


@dataclasses.dataclass(frozen=True)
class Image:
    path: pathlib.Path
    caption: str


@dataclasses.dataclass(frozen=True)
class Code:
    text: str


Block = Heading | Text | Table | Image | Code


def markdown_table(table: Table) -> str:
    """A GitHub Markdown table with padded columns, readable in a terminal as it is."""
    widths = [max(len(c) for c in column) for column in zip(table.header, *table.rows)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i < table.names else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    rule = "| " + " | ".join("-" * (w - 1) + ("-" if i < table.names else ":") for i, w in enumerate(widths)) + " |"
    return "\n".join([line(table.header), rule] + [line(r) for r in table.rows])


def to_markdown(title: str, blocks: list[Block], base: pathlib.Path) -> str:
    """Markdown; images are linked relative to `base` (the folder the .md file is written to)."""
    out = [f"# {title}"]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Text):
            out.append(block.text)
        elif isinstance(block, Table):
            out.append(markdown_table(block))
        elif isinstance(block, Image):
            out.append(f"![{block.caption}]({block.path.relative_to(base).as_posix()})")
        else:
            out.append(f"```\n{block.text}\n```")
    return "\n\n".join(out) + "\n"


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70em; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f2f2f2; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
figure { margin: 1em 0; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" if i < table.names else f'<td class="number">{html.escape(c)}</td>'
                         for i, c in enumerate(row)) + "</tr>\n"
        for row in table.rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def to_html(title: str, blocks: list[Block]) -> str:
    """One HTML page with nothing outside it: images are embedded as base64 data URIs."""
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            out.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            out.append(_html_table(block))
        elif isinstance(block, Image):
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            caption = html.escape(block.caption)
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                       f"<figcaption>{caption}</figcaption></figure>")
        else:
            out.append(f"<pre>{html.escape(block.text)}</pre>")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{_STYLE}</style>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n" + "\n".join(out)
            + "\n</body>\n</html>\n")

"""A self-contained HTML page: headings, paragraphs, tables and PNG or JPEG images embedded as base64.

The page needs no other file and no network (no scripts, no external CSS or fonts), so it can
be mailed or archived as is. All text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;max-width:1800px;
color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}
h3{font-size:15px;margin:18px 0 6px}
p.meta{color:#555;margin-top:0}
figure{margin:12px 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{color:#555;font-size:13px;margin-top:4px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:middle}
th{background:#f3f3f3}td.num{text-align:right;font-family:monospace}
td img{display:block;image-rendering:auto}
"""


@dataclass
class Image:
    """A PNG or JPEG (``png`` holds either's bytes) to embed; ``width`` in CSS pixels (None: natural
    size, shrunk to the page)."""

    png: bytes
    alt: str
    caption: str = ""
    width: int | None = None


@dataclass
class Table:
    """Rows of cells; a cell is text, a number (right-aligned) or an :class:`Image` (inline)."""

    columns: list[str]
    rows: list[list[object]] = field(default_factory=list)


def data_uri(data: bytes) -> str:
    """``data:image/png;base64,…`` (or ``image/jpeg`` for JPEG bytes)."""
    mime = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _img_tag(img: Image) -> str:
    width = f' width="{img.width}"' if img.width else ""
    return f'<img src="{data_uri(img.png)}" alt="{html.escape(img.alt)}"{width}>'


def _cell(value: object) -> str:
    if isinstance(value, Image):
        return f"<td>{_img_tag(value)}</td>"
    if isinstance(value, bool) or value is None:
        return f"<td>{'–' if value is None else html.escape(str(value))}</td>"
    if isinstance(value, int | float):
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return f'<td class="num">{text}</td>'
    return f"<td>{html.escape(str(value))}</td>"


class Page:
    """Build a page block by block, then :meth:`render` it to one HTML string."""

    def __init__(self, title: str, meta: str = "") -> None:
        self.title = title
        self.parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]
        if meta:
            self.parts.append(f'<p class="meta">{html.escape(meta)}</p>')

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def image(self, img: Image) -> None:
        caption = f"<figcaption>{html.escape(img.caption)}</figcaption>" if img.caption else ""
        self.parts.append(f"<figure>{_img_tag(img)}{caption}</figure>")

    def table(self, table: Table) -> None:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in table.rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def render(self) -> str:
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>\n"
                + "\n".join(self.parts) + "\n</body></html>\n")

"""A self-contained HTML page: a contents list, figures embedded as SVG (vector) data, no
scripts, no network.

Every piece of text that could come from a user (sweep names, descriptions, params, tags, error
messages) goes through `esc`; markup is only ever written by this module.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem;color:#222;line-height:1.45}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.4rem}h3{margin-top:1.6rem}
.meta{color:#666;font-size:.9rem}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5rem .8rem;margin:.8rem 0}
.verdict{font-weight:600;padding:.05rem .4rem;border-radius:.3rem}.confirmed{background:#e3f4e6;color:#1e6b30}
.contradicted{background:#fde7e7;color:#9b1c1c}.inconclusive{background:#eee;color:#555}.claims li{margin:.4rem 0}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9rem}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0}th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}pre{background:#f7f7f7;padding:.8rem;overflow:auto;font-size:.85rem}
.toc{background:#f7f7f7;border:1px solid #e4e4e4;padding:.4rem 1.2rem;margin:1rem 0;font-size:.92rem}.toc ul{margin:.2rem 0;padding-left:1.2rem}
.wide{overflow-x:auto}.regime-underfit{color:#4c72b0}.regime-overfit{color:#c44e52}.regime-good{color:#3a7d4b}.regime-inconclusive{color:#777}
"""


def _slug(text: str) -> str:
    """An anchor for a heading: lower-case letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return slug or "section"


def esc(value) -> str:
    """Text for HTML: escaped, quotes included."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value) -> str:
    """Numbers for tables: whole numbers in full (byte counts), others to four significant digits."""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value)}"
        return f"{value:.4g}"
    return str(value)


class Page:
    """Collects a report's parts, writes its figures as PNG files beside it and embeds them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.parts: list[str] = []
        self.figures: list[Path] = []
        self.headings: list[tuple[int, str, str]] = []  # (level, text, anchor): the contents list

    def _heading(self, level: int, text: str, anchor: str) -> None:
        anchor = _slug(anchor or text)
        taken = {a for _, _, a in self.headings}
        base, n = anchor, 2
        while anchor in taken:
            anchor, n = f"{base}-{n}", n + 1
        self.headings.append((level, text, anchor))
        self.parts.append(f'<h{level} id="{esc(anchor)}">{esc(text)}</h{level}>')

    def h2(self, text: str, anchor: str = "") -> None:
        self._heading(2, text, anchor)

    def h3(self, text: str, anchor: str = "") -> None:
        self._heading(3, text, anchor)

    def contents(self) -> str:
        """The contents list: every section and subsection, linked to its anchor."""
        if not self.headings:
            return ""
        html_parts, level = ['<nav class="toc"><strong>Contents</strong><ul>'], 2
        for i, (depth, text, anchor) in enumerate(self.headings):
            if depth > level:
                html_parts.append("<ul>")
            elif depth < level:
                html_parts.append("</li></ul></li>")
            elif i:
                html_parts.append("</li>")
            level = depth
            html_parts.append(f'<li><a href="#{esc(anchor)}">{esc(text)}</a>')
        html_parts.append("</li>" + ("</ul></li>" if level == 3 else "") + "</ul></nav>")
        return "".join(html_parts)

    def items(self, texts: list[str]) -> None:
        self.parts.append("<ul>" + "".join(f"<li>{esc(t)}</li>" for t in texts) + "</ul>")

    def p(self, text: str) -> None:
        self.parts.append(f"<p>{esc(text)}</p>")

    def note(self, text: str) -> None:
        self.parts.append(f'<div class="note">{esc(text)}</div>')

    def pre(self, text: str) -> None:
        self.parts.append(f"<pre>{esc(text)}</pre>")

    def figure(self, fig, name: str, caption: str) -> None:
        """Embed `fig` as SVG (sharp at any zoom), also saved under figures/."""
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "study"}):  # text stays text; stable ids
            fig.savefig(buffer, format="svg", metadata={"Date": None})
        plt.close(fig)
        data = buffer.getvalue()
        path = self.folder / "figures" / f"{len(self.figures) + 1:02d}-{name}.svg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.figures.append(path)
        encoded = base64.b64encode(data).decode()
        self.parts.append(
            f'<figure><img alt="{esc(caption)}" src="data:image/svg+xml;base64,{encoded}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>"
        )

    def table(self, frame: pd.DataFrame, links: dict[str, str] | None = None, classes: dict[str, str] | None = None,
              labels=None) -> None:
        """A table of `frame`; `links` maps a cell's text to a URL (MLflow runs); `labels` turns a
        column name into its header."""
        if frame.empty:
            return
        head = "".join(f"<th>{esc(labels(c) if labels else c)}</th>" for c in frame.columns)
        rows = []
        for _, row in frame.iterrows():
            cells = []
            for column, value in row.items():
                text = fmt(value)
                css = ' class="num"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
                if classes and column in classes:
                    css = f' class="{esc(classes[column])}-{esc(str(value).split()[0])}"'
                if links and text in links:  # a run id: its first 8 characters, the whole id on hover
                    cells.append(f'<td{css}><a href="{esc(links[text])}" title="{esc(text)}">{esc(text[:8])}</a></td>')
                else:
                    cells.append(f"<td{css}>{esc(text)}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        self.parts.append(f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')

    def claims(self, claims: list) -> None:
        """Each claim: its verdict, what it is judged on, the effect with its interval and p-value,
        the numbers, and for an inconclusive verdict what would decide it."""
        if not claims:
            return
        items = []
        for c in claims:
            test = (f"p = {c.p_value:.2g} ({c.test})" if math.isfinite(c.p_value) else f"no test possible ({c.test})")
            decide = f" To decide: {c.decide}." if c.decide else ""
            items.append(
                f'<li><span class="verdict {esc(c.verdict.replace(" ", "-"))}">{esc(c.verdict)}</span> '
                f"<strong>{esc(c.claim)}</strong>, judged on {esc(c.quantity)}: {esc(c.evidence)}. "
                f"{esc(test)}.{esc(decide)}</li>"
            )
        self.parts.append(f'<ul class="claims">{"".join(items)}</ul>')

    def render(self, title: str, subtitle: str) -> str:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return (
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class=\"meta\">{esc(subtitle)} · generated {esc(stamp)}</p>"
            + self.contents()
            + "\n".join(self.parts)
            + "</body></html>\n"
        )

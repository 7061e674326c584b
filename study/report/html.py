"""A self-contained HTML page: figures embedded as PNG data, no scripts, no network.

Every piece of text that could come from a user (sweep names, descriptions, params, tags, error
messages) goes through `esc`; markup is only ever written by this module.
"""

from __future__ import annotations

import base64
import html
import io
import math
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
.wide{overflow-x:auto}.regime-underfit{color:#4c72b0}.regime-overfit{color:#c44e52}.regime-good{color:#3a7d4b}.regime-inconclusive{color:#777}
"""


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

    def h2(self, text: str, anchor: str = "") -> None:
        self.parts.append(f'<h2 id="{esc(anchor)}">{esc(text)}</h2>' if anchor else f"<h2>{esc(text)}</h2>")

    def h3(self, text: str, anchor: str = "") -> None:
        self.parts.append(f'<h3 id="{esc(anchor)}">{esc(text)}</h3>' if anchor else f"<h3>{esc(text)}</h3>")

    def items(self, texts: list[str]) -> None:
        self.parts.append("<ul>" + "".join(f"<li>{esc(t)}</li>" for t in texts) + "</ul>")

    def p(self, text: str) -> None:
        self.parts.append(f"<p>{esc(text)}</p>")

    def note(self, text: str) -> None:
        self.parts.append(f'<div class="note">{esc(text)}</div>')

    def pre(self, text: str) -> None:
        self.parts.append(f"<pre>{esc(text)}</pre>")

    def figure(self, fig, name: str, caption: str) -> None:
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        data = buffer.getvalue()
        path = self.folder / "figures" / f"{len(self.figures) + 1:02d}-{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.figures.append(path)
        encoded = base64.b64encode(data).decode()
        self.parts.append(
            f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{encoded}">'
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
                if links and text in links:
                    cells.append(f'<td{css}><a href="{esc(links[text])}">{esc(text)}</a></td>')
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
            + "\n".join(self.parts)
            + "</body></html>\n"
        )

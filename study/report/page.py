"""A self-contained HTML page: a contents list, figures embedded as SVG (vector) data, no
scripts, no network.

A `Page` collects typed blocks (headings, paragraphs, tables, figures, claims); the Jinja2
templates in templates/ write them, with autoescaping on, so every piece of text that could come
from a user (sweep names, descriptions, params, tags, error messages) is escaped and markup is
only ever written by the templates.
"""

from __future__ import annotations

import base64
import io
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from study.report.verdicts import sentence

HEAT_LEVELS = 6  # shades of the heat table (templates/_style.html: heat-0 … heat-5)


@cache
def environment() -> jinja2.Environment:
    """The report's templates, autoescaped (select_autoescape: on for .html and for strings)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("study.report", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
    )


def render_template(name: str, **context) -> str:
    return environment().get_template(name).render(**context)


def _slug(text: str) -> str:
    """An anchor for a heading: lower-case letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return slug or "section"


def fmt(value) -> str:
    """Numbers for tables: whole numbers in full (byte counts), others to four significant digits."""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value)}"
        return f"{value:.4g}"
    return str(value)


# ---------------------------------------------------------------------------------- blocks
@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str
    kind: str = "heading"


@dataclass(frozen=True)
class Text:
    """A paragraph ('p'), a highlighted note ('note') or preformatted text ('pre')."""

    kind: str
    text: str


@dataclass(frozen=True)
class Span:
    """A piece of a paragraph: text, a command to copy (`code`), or a link (`href`, http or https)."""

    text: str
    href: str = ""
    code: bool = False


def link(href: str, text: str = "") -> Span:
    """A link to `href`, showing `text` (the address itself by default); an address that is not
    http or https stays plain text."""
    return Span(text or href, href if href.startswith(("http://", "https://")) else "")


def code(text: str) -> Span:
    return Span(text, code=True)


@dataclass(frozen=True)
class Line:
    """A paragraph of spans. kind 'header': a line of the page's header, under the title (in its
    meta paragraph, above the summary and contents: templates/report.html), not among the blocks."""

    spans: list[Span]
    kind: str = "line"


@dataclass(frozen=True)
class Items:
    texts: list[str]
    kind: str = "items"


@dataclass(frozen=True)
class Figure:
    src: str  # a data: URI of the SVG
    caption: str
    kind: str = "figure"


@dataclass(frozen=True)
class Cell:
    text: str
    css: str = ""
    href: str = ""  # a link (a run in the MLflow UI); the cell shows the text's first 8 characters
    title: str = ""


@dataclass(frozen=True)
class Table:
    head: list[str]
    rows: list[list[Cell]]
    kind: str = "table"


@dataclass(frozen=True)
class ClaimItem:
    verdict: str
    claim: str
    quantity: str
    evidence: str
    test: str
    decide: str
    sentence: str = ""  # the claim, its verdict, the effect with its interval and why, in plain words


@dataclass(frozen=True)
class SummaryLine:
    """One line of the summary above the contents: what was found, with links to its section and run."""

    label: str
    text: str
    anchor: str = ""
    href: str = ""
    verdict: str = ""


@dataclass(frozen=True)
class Claims:
    items: list[ClaimItem]
    kind: str = "claims"


@dataclass(frozen=True)
class Entry:
    """One line of the contents list, with its subsections."""

    text: str
    anchor: str
    children: list[Entry] = field(default_factory=list)


# ------------------------------------------------------------------------------------ page
class Page:
    """Collects a report's blocks; writes its figures as SVG files beside it and embeds them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.blocks: list = []
        self.figures: list[Path] = []
        self.summary: list[SummaryLine] = []

    @property
    def headings(self) -> list[Heading]:
        return [b for b in self.blocks if isinstance(b, Heading)]

    def _heading(self, level: int, text: str, anchor: str) -> None:
        anchor = _slug(anchor or text)
        taken = {h.anchor for h in self.headings}
        base, n = anchor, 2
        while anchor in taken:
            anchor, n = f"{base}-{n}", n + 1
        self.blocks.append(Heading(level, text, anchor))

    def h2(self, text: str, anchor: str = "") -> None:
        self._heading(2, text, anchor)

    def h3(self, text: str, anchor: str = "") -> None:
        self._heading(3, text, anchor)

    def contents(self) -> list[Entry]:
        """The contents list: every section, with its subsections, linked to its anchor."""
        entries: list[Entry] = []
        for heading in self.headings:
            entry = Entry(heading.text, heading.anchor)
            if heading.level > 2 and entries:
                entries[-1].children.append(entry)
            else:
                entries.append(entry)
        return entries

    def items(self, texts: list[str]) -> None:
        self.blocks.append(Items(list(texts)))

    def p(self, text: str) -> None:
        self.blocks.append(Text("p", text))

    def note(self, text: str) -> None:
        self.blocks.append(Text("note", text))

    def line(self, *pieces: str | Span) -> None:
        """A paragraph of text, `code` and links (see link() and code())."""
        self.blocks.append(Line([p if isinstance(p, Span) else Span(p) for p in pieces]))

    def header(self, *pieces: str | Span) -> None:
        """A line under the page's title, above everything else (what the reader needs first)."""
        self.blocks.append(Line([p if isinstance(p, Span) else Span(p) for p in pieces], "header"))

    def pre(self, text: str) -> None:
        self.blocks.append(Text("pre", text))

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
        self.blocks.append(Figure(f"data:image/svg+xml;base64,{base64.b64encode(data).decode()}", caption))

    def table(self, frame: pd.DataFrame, links: dict[str, str] | None = None, classes: dict[str, str] | None = None,
              labels=None) -> None:
        """A table of `frame`; `links` maps a cell's text to a URL (MLflow runs); `classes` names
        columns whose cells get the CSS class '<prefix>-<first word of the value>'; `labels` turns
        a column name into its header."""
        if frame.empty:
            return
        head = [str(labels(c) if labels else c) for c in frame.columns]
        rows = []
        for values in frame.itertuples(index=False):
            cells = []
            for column, value in zip(frame.columns, values):
                if isinstance(value, np.generic):  # NumPy scalars as Python numbers
                    value = value.item()
                text = fmt(value)
                css = "num" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
                if classes and column in classes:
                    css = f"{classes[column]}-{str(value).split()[0]}"
                if links and text in links:  # a run id: its first 8 characters, the whole id on hover
                    cells.append(Cell(text[:8], css, links[text], text))
                else:
                    cells.append(Cell(text, css))
            rows.append(cells)
        self.blocks.append(Table(head, rows))

    def claims(self, claims: list) -> None:
        """Each claim: its verdict, what it is judged on, the effect with its interval and p-value,
        the numbers, and for an inconclusive verdict what would decide it."""
        if not claims:
            return
        items = []
        for c in claims:
            test = f"p = {c.p_value:.2g} against no effect" if math.isfinite(c.p_value) else f"no test possible ({c.test})"
            if math.isfinite(c.p_negligible):
                test += f", p = {c.p_negligible:.2g} against an effect of ±{c.margin * c.scale:.3g}{c.unit} or more"
            if math.isfinite(c.p_value):
                test += f" ({c.test})"
            decide = f" To decide: {c.decide}." if c.decide else ""
            items.append(ClaimItem(c.verdict, c.claim, c.quantity, c.evidence, test, decide, sentence(c)))
        self.blocks.append(Claims(items))

    def render(self, title: str, subtitle: str) -> str:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        return render_template("report.html", title=title, subtitle=subtitle, stamp=stamp, contents=self.contents(),
                               blocks=self.blocks, summary=self.summary)

    def heat(self, head: list[str], rows: list[list[tuple[str, float]]]) -> None:
        """A table whose cells are shaded by their value (light: low, dark: high), in HEAT_LEVELS steps."""
        values = [v for row in rows for _, v in row if isinstance(v, float) and math.isfinite(v)]
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
        cells = []
        for row in rows:
            line = []
            for text, value in row:
                level = "" if not (isinstance(value, float) and math.isfinite(value)) else \
                    f"heat-{min(HEAT_LEVELS - 1, int((value - low) / ((high - low) or 1) * HEAT_LEVELS))}"
                line.append(Cell(text, f"num {level}".strip()))
            cells.append(line)
        self.blocks.append(Table(head, cells))

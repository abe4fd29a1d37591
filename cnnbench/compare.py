"""``cnnbench compare``: measured metrics beside the paper's published numbers.

Rows are the paper's three methods (:mod:`cnnbench.paper`, where a column has a published number)
and one measured row per (backbone, recipe): ``effnet-lite0`` when the backbone has only the
default recipe ``cnn``, else ``effnet-lite0 · cnnaug`` (with `` [layer]`` where a backbone was
evaluated on several layers). A result is (backbone, data set, recipe, head, layer): two results
for one are refused, naming both files. Columns are (data set, head, metric). Values are
percentages with their 95 % interval in square brackets (:mod:`cnnbench.stats`: a t-interval over
the protocol's trials or few-shot draws where it has several, else a seeded bootstrap over the
test images from the head's per-image outcomes); ``± x`` (the standard deviation over trials)
where no interval can be drawn. In each column the best measured row is compared with every other
measured row on the same test images (McNemar for single-split accuracy, else a paired bootstrap);
``≈`` marks a row not significantly different from the best (p ≥ 1 − level).

Every measured row's value is followed by its difference (``(+1.2)``, percentage points) to the
paper row of the same method (``--baseline paper``, the default: a ``cnnaug`` row against
``paper: OverFeat CNNaug-SVM``, ``cnn-ss`` against ``paper: OverFeat CNN-ss``; the recipe's
``paper_row``), or to one row for all (``--baseline``: a paper row or alias such as ``CNN-ss``, or
a measured row's name). Outputs: a terminal table, Markdown, a wide CSV (values and differences),
a long CSV (one row per cell with its recipe: what ``dvc plots`` reads) and a PNG bar chart grouped
by data set, each bar marked with the paper's number of its method (:func:`chart_bars`).
Results with few-shot metrics (``<metric>@<k>shot``, :mod:`cnnbench.fewshot`) also give a few-shot
curve (the primary metric against shots, one line per row and head) as a PNG and a table;
backbones evaluated on several stored layers give a per-layer plot (which layer transfers best).
Where the outputs go: :func:`output_paths`.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import paper, stats
from .errors import CnnbenchError, UserError
from .jsonio import ResultError, WriteError, atomic_write_text, writable_dir
from .recipes import DEFAULT as DEFAULT_RECIPE
from .results import Result, Score, as_results

log = logging.getLogger("cnnbench.compare")

Column = tuple[str, str, str]  # dataset, head, metric
# metrics shown beside a record's primary one: the revisited Oxford and Paris (roxford5k, rparis6k)
# are reported as Medium and Hard side by side, as in Radenović et al. 2018 and the papers since
SHOWN_WITH = {"mAP_medium": ("mAP_hard",)}


@dataclass(frozen=True)
class Measured:
    """What a measured row is: one backbone's results with one recipe (on one layer), and the paper
    row of its method (the recipe's ``paper_row``, :func:`cnnbench.paper.row_for`)."""
    backbone: str
    recipe: str
    layer: str
    paper_row: str


@dataclass
class Table:
    columns: list[Column]
    rows: list[str]
    values: dict[tuple[str, Column], float] = field(default_factory=dict)  # percent
    spread: dict[tuple[str, Column], float] = field(default_factory=dict)
    reference_rows: list[str] = field(default_factory=list)
    baseline: str | None = None  # a row, paper.BY_METHOD (each row against its method's paper row), None
    intervals: dict[tuple[str, Column], "stats.Interval"] = field(default_factory=dict)  # percent
    best: dict[Column, str] = field(default_factory=dict)  # the best measured row of a column (when tested)
    paired: dict[tuple[str, Column], "stats.Paired"] = field(default_factory=dict)  # each other row vs the best
    level: float = stats.LEVEL
    measured: dict[str, Measured] = field(default_factory=dict)  # measured row -> what it is

    def significant(self, row: str, col: Column) -> bool | None:
        """Whether ``row`` differs from its column's best row (None: not tested, or the best itself)."""
        res = self.paired.get((row, col))
        return None if res is None else res.p < 1 - self.level

    @property
    def by_method(self) -> bool:
        return self.baseline == paper.BY_METHOD

    def reference(self, row: str) -> str | None:
        """The row ``row``'s differences are taken against: the baseline row, or by method the paper
        row of the row's recipe (paper rows: none); None where it is not in the table, or is ``row``."""
        if self.by_method:
            ref = self.measured[row].paper_row if row in self.measured else None
        else:
            ref = self.baseline
        return ref if ref in self.rows and ref != row else None

    def diff(self, row: str, col: Column) -> float | None:
        """Row minus its reference row in percentage points, where both have a value (None otherwise)."""
        ref = self.reference(row)
        v, b = self.values.get((row, col)), self.values.get((ref, col))
        return None if ref is None or v is None or b is None else v - b

    def recipe(self, row: str, col: Column) -> str:
        """The recipe of a cell: its measured row's, or the paper's method of that number."""
        return self.measured[row].recipe if row in self.measured else paper.RECIPE_OF_CELL.get((row, col), "")

    def cell(self, row: str, col: Column) -> str:
        v = self.values.get((row, col))
        if v is None:
            return "—"
        ci = self.intervals.get((row, col))
        s = self.spread.get((row, col))
        text = f"{v:.1f} [{ci.low:.1f}, {ci.high:.1f}]" if ci else (f"{v:.1f} ± {s:.1f}" if s else f"{v:.1f}")
        if self.significant(row, col) is False:
            text += " ≈"
        d = self.diff(row, col)
        return text if d is None else f"{text} ({d:+.1f})"

    def set_baseline(self, name: str | None) -> None:
        """Pick what differences are taken against: ``paper`` (each measured row against the paper row
        of its method), a row name, a paper alias (``CNN-SVM``, ``CNN-ss``, ``CNNaug-SVM``), a backbone
        or a measured row's name without its layer, where that names one row; None: no differences."""
        if name is None or name.lower() == paper.BY_METHOD:
            self.baseline = None if name is None else paper.BY_METHOD
            return
        resolved = paper.ALIASES.get(name.lower(), name)
        if resolved not in self.rows:
            matches = [r for r, m in self.measured.items() if name in (r.split(" [")[0], m.backbone)]
            if len(matches) != 1:
                raise CnnbenchError(f"baseline {name!r} is not a row of this table; rows: {self.rows}"
                                    f"{' (several rows match: name one)' if matches else ''}; paper aliases: "
                                    f"{sorted(paper.ALIASES)}, or {paper.BY_METHOD!r}: each row against the paper "
                                    "row of its method")
            resolved = matches[0]
        self.baseline = resolved

    def baseline_text(self) -> str:
        """What the differences in brackets are taken against, in words ("": nothing)."""
        if not self.by_method:
            return self.baseline or ""
        pairs = dict.fromkeys((m.recipe, m.paper_row) for m in self.measured.values() if m.paper_row in self.rows)
        return "the paper row of the same method (" + "; ".join(f"{r}: {p}" for r, p in pairs) + ")" if pairs else ""

    @staticmethod
    def label(col: Column) -> str:
        return f"{col[0]} · {col[1]} · {col[2]} (%)"


def load_records(metrics_dir: str | os.PathLike) -> list[dict]:
    """Every result under ``metrics_dir``: each metrics file joined with its run record (see
    :mod:`cnnbench.evaluate`), or a single-file record of an older cnnbench. A result whose files are
    damaged or do not belong together is refused (:class:`~cnnbench.jsonio.ResultError`, one line
    naming them); other JSON is ignored, with a warning when it cannot be read. A file reached twice
    (through a link) is read once."""
    from .outcomes import SUFFIX as OUTCOMES_SUFFIX
    from .results import RUN_SUFFIX, read_results

    records, seen = [], set()
    for path in sorted(Path(metrics_dir).rglob("*.json")):
        if path.name.endswith((RUN_SUFFIX, OUTCOMES_SUFFIX)) or path.resolve() in seen:
            continue
        seen.add(path.resolve())
        try:
            rec = read_results(path)
        except ResultError:
            raise
        except (OSError, ValueError) as exc:  # JSON no result claims: anybody's
            log.warning("ignoring %s: %s", path, exc)
            continue
        if rec is not None:
            rec["_path"] = str(path)
            records.append(rec)
    return records


def dataset_label(rec: Result) -> str:
    """The data set as a column names it: ``roxford5k+revisitop1m`` when distractors were appended to
    its database (ROxf+R1M is another benchmark than ROxf, with other published numbers); the
    distractor file's own data set, as its run record keeps it, else the option as given."""
    return rec.dataset_label


def recipe_of(rec: Result) -> str:
    """The recipe a result was computed with (``cnn`` for a result of a cnnbench before recipes,
    :func:`cnnbench.results.check_record`)."""
    return rec.recipe or DEFAULT_RECIPE


def paper_row_of(rec: Result) -> str:
    """The paper row a result is compared with: its recipe's ``paper_row`` as the run record keeps it
    (``recipe_spec``), else the built-in map of :mod:`cnnbench.paper` (CNN-SVM for a recipe it does not
    name); a ``paper_row`` that names no paper row is one line naming the file."""
    named = rec.recipe_spec.get("paper_row")
    row = paper.row_for(recipe_of(rec), named) if named is None or isinstance(named, str) else None
    if row is None:
        from .jsonio import describe
        from .results import rerun_hint

        source = rec.path or "a result"
        raise ResultError(f"{source}: recipe_spec['paper_row'] is {describe(named)}, not a paper row (one of "
                          f"{sorted(paper.ROWS)}); {rerun_hint(Path(source), rec.record)}")
    return row


def row_label(m: Measured, recipes: set[str], multi_layer: bool = False) -> str:
    """``backbone`` when the backbone has only the default recipe among the results, else
    ``backbone · recipe``; `` [layer]`` added where it was evaluated on several layers."""
    name = m.backbone if recipes == {DEFAULT_RECIPE} else f"{m.backbone} · {m.recipe}"
    return f"{name} [{m.layer}]" if multi_layer else name


def labelled(records: list[dict | Result]) -> list[tuple[str, Measured, Result]]:
    """(row label, what the row is, record) of every record, in the table's order (backbone, recipe:
    ``cnn`` first, layer, data set, head). Two rows of one label (a backbone named ``a · b`` beside
    recipe ``b`` of ``a``), and results of one recipe naming two paper rows, are one line naming
    both files."""
    recipes: dict[str, set[str]] = {}
    layers: dict[str, set[str]] = {}
    found = []
    for rec in as_results(records):
        m = Measured(rec.backbone, recipe_of(rec), rec.layer or "", paper_row_of(rec))
        recipes.setdefault(m.backbone, set()).add(m.recipe)
        layers.setdefault(m.backbone, set()).add(m.layer)
        found.append((m, rec))
    found.sort(key=lambda f: (f[0].backbone, f[0].recipe != DEFAULT_RECIPE, f[0].recipe, f[0].layer,
                              f[1].dataset, f[1].head))
    out, first = [], {}
    for m, rec in found:
        label = row_label(m, recipes[m.backbone], len(layers[m.backbone]) > 1)
        seen, other = first.setdefault(label, (m, rec))
        if seen != m:
            same = (seen.backbone, seen.recipe, seen.layer) == (m.backbone, m.recipe, m.layer)
            why = (f"recipe {m.recipe} is compared with {seen.paper_row} in one and {m.paper_row} in the other; "
                   "rerun the evaluations of that recipe" if same else
                   f"both would be the row {label!r}; rename one backbone")
            raise ResultError(f"{other.path} and {rec.path}: {why}")
        out.append((label, m, rec))
    return out


def build_table(records: list[dict | Result], all_metrics: bool = False, with_paper: bool = True,
                baseline: str | None = paper.DEFAULT_BASELINE, *, intervals: bool = True, level: float = stats.LEVEL,
                bootstrap: int = stats.BOOTSTRAP, seed: int = stats.SEED) -> Table:
    """``baseline``: what differences are taken against (see :meth:`Table.set_baseline`; default: each
    row against the paper row of its method); ``paper`` and the paper's CNN-SVM row (the default of
    earlier versions) are silently dropped when the table has no paper row. ``intervals``: draw
    intervals and paired tests (:mod:`cnnbench.stats`) at ``level`` with ``bootstrap`` resamples
    seeded by ``seed``."""
    stats.check_resamples(bootstrap)
    columns: list[Column] = []
    rows: list[str] = []
    table = Table(columns, rows, level=level)
    kept: dict[tuple[str, Column], tuple[Result, Score]] = {}  # (row, column) -> its result and score
    for row, what, rec in labelled(records):
        if all_metrics:
            shown = [s for s in rec.scores if s.name != "C"]
        else:
            shown = [rec.score(n) for n in (rec.primary, *SHOWN_WITH.get(rec.primary, ()))]
        if row not in rows:
            rows.append(row)
            table.measured[row] = what
        for score in filter(None, shown):
            col = (rec.dataset_label, rec.head, score.name)
            if col not in columns:
                columns.append(col)
            if (row, col) in kept:
                raise ResultError(f"{kept[(row, col)][0].path} and {rec.path} are both results of "
                                  f"{rec.backbone} on {col[0]} with {col[1]} (recipe {recipe_of(rec)}, layer "
                                  f"{rec.layer or '-'}): a table has one cell for them; compare each on its "
                                  "own (--metrics), or remove the one that is not wanted")
            table.values[(row, col)] = 100.0 * score.value
            if score.std:
                table.spread[(row, col)] = 100.0 * score.std
            kept[(row, col)] = (rec, score)
    columns.sort()
    if intervals:
        _uncertainty(table, kept, bootstrap, seed)
    if with_paper:
        for name, published in paper.ROWS.items():
            hits = {col: published[col] for col in columns if col in published}
            if hits:
                table.reference_rows.append(name)
                for col, v in hits.items():
                    table.values[(name, col)] = v
        table.rows[:0] = table.reference_rows
    if baseline in (paper.BY_METHOD, paper.CNN_SVM) and not table.reference_rows:
        baseline = None
    table.set_baseline(baseline)
    return table


def to_markdown(table: Table) -> str:
    head = ["backbone"] + [Table.label(c) for c in table.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(table.columns)) + "|"]
    for row in table.rows:
        cells = [f"**{table.cell(row, c)}**" if table.best.get(c) == row else table.cell(row, c) for c in table.columns]
        lines.append("| " + " | ".join([row] + cells) + " |")
    notes = []
    if table.intervals:
        pct = f"{100 * table.level:g} %"
        notes.append(f"In square brackets: {pct} interval (t over the protocol's trials or few-shot draws where it "
                     "has several; else a seeded bootstrap over the test images).")
    if table.paired:
        notes.append(f"≈: not significantly different from the best measured row of its column on the same test "
                     f"images (McNemar for single-split accuracy, else a paired bootstrap; p ≥ {1 - table.level:.2g}).")
    if table.baseline_text():
        notes.append(f"In brackets: difference to **{table.baseline_text()}** (percentage points).")
    if table.reference_rows:
        notes.append(f"Paper rows: {paper.CITATION}.")
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = ["backbone"] + [Table.label(c) for c in table.columns]
    against = "the paper, same method" if table.by_method else table.baseline
    differences = bool(table.baseline_text())
    if differences:
        header += [f"{Table.label(c)} vs {against} (points)" for c in table.columns]
    uncertain = bool(table.intervals or table.paired)
    if uncertain:
        for c in table.columns:
            header += [f"{Table.label(c)} ci low", f"{Table.label(c)} ci high", f"{Table.label(c)} p vs best"]
    w.writerow(header)
    for row in table.rows:
        vals = table.values
        line = [row] + ["" if (row, c) not in vals else f"{vals[(row, c)]:.2f}" for c in table.columns]
        if differences:
            line += ["" if table.diff(row, c) is None else f"{table.diff(row, c):+.2f}" for c in table.columns]
        if uncertain:
            for c in table.columns:
                ci, res = table.intervals.get((row, c)), table.paired.get((row, c))
                line += ["" if ci is None else f"{ci.low:.2f}", "" if ci is None else f"{ci.high:.2f}",
                         "" if res is None else f"{res.p:.4g}"]
        w.writerow(line)
    return buf.getvalue()


def to_long_csv(table: Table) -> str:
    """One line per (row, column) with a value: what ``dvc plots show`` draws. ``recipe``: the measured
    row's, or the paper's method of that number (``cnnaug-ss`` for the retrieval cells of the CNNaug-SVM
    row); ``baseline``: the row its difference is taken against."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["backbone", "recipe", "column", "dataset", "head", "metric", "value", "std", "ci_low", "ci_high",
                "ci_method", "p_vs_best", "reference", "baseline", "difference"])
    for row in table.rows:
        for c in table.columns:
            v = table.values.get((row, c))
            if v is None:
                continue
            d = table.diff(row, c)
            ci, res = table.intervals.get((row, c)), table.paired.get((row, c))
            w.writerow([row, table.recipe(row, c), f"{c[0]} {c[1]} {c[2]}", *c, f"{v:.2f}", f"{table.spread.get((row, c), 0.0):.2f}",
                        "" if ci is None else f"{ci.low:.2f}", "" if ci is None else f"{ci.high:.2f}",
                        "" if ci is None else ci.method, "" if res is None else f"{res.p:.4g}",
                        "paper" if row in table.reference_rows else "measured",
                        (table.reference(row) or "") if d is not None else "",
                        "" if d is None else f"{d:+.2f}"])
    return buf.getvalue()


@dataclass(frozen=True)
class Bar:
    """One bar of compare.png: a measured cell at ``x``, its whiskers (below, above) and the paper's
    number of the same method (its row's paper row: the black mark over the bar; None: unpublished)."""
    row: str
    column: Column
    x: float
    value: float
    err: tuple[float, float]
    paper_row: str | None
    paper_value: float | None


def chart_bars(table: Table) -> list[Bar]:
    """The bars of :func:`render_png`: one group per column (columns are in data-set order), one bar
    per measured row with a value there, in row order."""
    measured = [r for r in table.rows if r not in table.reference_rows]
    width = 0.8 / max(1, len(measured))
    bars = []
    for j, row in enumerate(measured):
        ref = table.measured[row].paper_row if row in table.measured else None
        ref = ref if ref in table.reference_rows else None
        for i, c in enumerate(table.columns):
            v = table.values.get((row, c))
            if v is None:
                continue
            ci = table.intervals.get((row, c))  # the interval where there is one, else ± std
            s = table.spread.get((row, c), 0.0)
            err = (max(0.0, v - ci.low), max(0.0, ci.high - v)) if ci else (s, s)
            pv = table.values.get((ref, c)) if ref else None
            bars.append(Bar(row, c, i - 0.4 + width * (j + 0.5), v, err, ref if pv is not None else None, pv))
    return bars


def render_png(table: Table, path: str | os.PathLike) -> None:
    """Bar chart (:func:`chart_bars`): one group per (data set, head, metric), data sets divided by a
    thin line, one bar per measured row, and over each bar a black mark at the paper's number of the
    bar's method (line style: which paper row); written with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    measured = [r for r in table.rows if r not in table.reference_rows]
    cols = table.columns
    width = 0.8 / max(1, len(measured))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(cols) + 2.5), 4.8), dpi=120)
    cmap = plt.get_cmap("tab10")
    bars = chart_bars(table)
    for j, row in enumerate(measured):
        mine = [b for b in bars if b.row == row]
        errs = [b.err for b in mine]
        yerr = list(zip(*errs)) if any(e for pair in errs for e in pair) else None
        drawn = ax.bar([b.x for b in mine], [b.value for b in mine], width * 0.9, yerr=yerr, capsize=3,
                       color=cmap(j % 10), label=row, zorder=2)
        for rect, b in zip(drawn, mine):  # the label above the whisker and the paper's mark, not across them
            top = max(b.value + b.err[1], b.paper_value if b.paper_value is not None else 0.0)
            ax.text(rect.get_x() + rect.get_width() / 2, top + 1, f"{b.value:.1f}", ha="center", va="bottom",
                    fontsize=7)
    styles = dict(zip(paper.ROWS, ["-", "--", ":"]))
    named = set()
    for b in bars:
        if b.paper_value is None:
            continue
        ax.hlines(b.paper_value, b.x - width * 0.5, b.x + width * 0.5, colors="black", linewidth=1.8, zorder=3,
                  linestyles=styles.get(b.paper_row, "-."), label=None if b.paper_row in named else b.paper_row)
        named.add(b.paper_row)
    for i in range(1, len(cols)):
        if cols[i][0] != cols[i - 1][0]:
            ax.axvline(i - 0.5, color="0.85", linewidth=0.8, zorder=1)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([f"{c[0]}\n{c[1]} · {c[2]}" for c in cols], fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_xlim(-0.6, len(cols) - 0.4)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    title = "cnnbench: measured (bars) vs the paper's same method (black marks)"
    if table.intervals:
        title += f"; whiskers: {100 * table.level:g} % intervals"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=max(1, min(3, len(measured) + len(named))),
              frameon=False)
    save_figure(fig, path)


def _outcomes(rec: Result, cache: dict) -> list | None:
    """The per-image outcomes beside a result's metrics file (None: none kept), read once; a damaged
    file is refused (:func:`cnnbench.results.read_outcomes`), never taken for "no intervals"."""
    from .results import read_outcomes

    if rec.path is None:
        return None
    if rec.path not in cache:
        cache[rec.path] = read_outcomes(rec.path, rec.record) or None
    return cache[rec.path]


def _interval(rec: Result, score: Score, trials, level: float, bootstrap: int, seed: int):
    """The protocol's repetitions where it has several (few-shot draws, trials), else the bootstrap."""
    per_trial = rec.per_trial(score)
    if score.shots is not None or len(per_trial) > 1:
        return stats.t_interval(per_trial, level)
    if trials:
        return stats.bootstrap_interval([o for _, o in trials], score.name, level=level, n=bootstrap, seed=seed)
    return None


def _uncertainty(table: Table, kept: dict, bootstrap: int, seed: int) -> None:
    """Intervals of every measured cell; per column, paired tests of each row against the best."""
    cache: dict = {}
    for (row, col), (rec, score) in kept.items():
        ci = _interval(rec, score, _outcomes(rec, cache), table.level, bootstrap, seed)
        if ci is not None:
            lo, hi = max(0.0, 100.0 * ci.low), min(100.0, 100.0 * ci.high)  # a t-interval can leave [0, 100]
            table.intervals[(row, col)] = stats.Interval(lo, hi, ci.method, ci.n)
    for col in table.columns:
        if any(score.shots is not None for (_, c), (_, score) in kept.items() if c == col):
            continue  # few-shot draws are not paired item by item
        rows = [r for r in table.rows if (r, col) in kept and _outcomes(kept[(r, col)][0], cache)]
        if len(rows) < 2:
            continue
        best = max(rows, key=lambda r: table.values[(r, col)])
        table.best[col] = best
        for r in rows:
            if r != best:
                res = stats.paired_test(_outcomes(kept[(r, col)][0], cache), _outcomes(kept[(best, col)][0], cache),
                                        col[2], n=bootstrap, seed=seed)
                if res is not None:
                    table.paired[(r, col)] = res


def render_terminal(table: Table) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    title = "cnnbench: frozen features vs the paper (values in %)"
    if table.baseline_text():
        title += f"\n(in brackets: difference to {table.baseline_text()}, points)"
    t = RichTable(title=title)
    t.add_column("backbone", style="bold")
    for c in table.columns:
        t.add_column(f"{c[0]}\n{c[1]} · {c[2]}", justify="right")
    for row in table.rows:
        style = "bold cyan" if row == table.baseline else ("dim" if row in table.reference_rows else None)
        t.add_row(row, *[table.cell(row, c) for c in table.columns], style=style)
    Console(width=max(100, 24 * (len(table.columns) + 1))).print(t)


# what each output is, as the user names it, and its file name where it is not named
OUTPUTS = {"markdown": ("--markdown", "compare.md"), "csv": ("--csv", "compare.csv"),
           "long_csv": ("--long-csv", "compare_long.csv"), "png": ("--png", "compare.png"),
           "fewshot_md": ("the few-shot table", "fewshot.md"), "fewshot_png": ("the few-shot curves", "fewshot.png"),
           "layers_png": ("the per-layer plot", "layers.png")}


def output_paths(reports_dir: str | os.PathLike, *, markdown=None, csv=None, long_csv=None, png=None) -> dict[str, Path]:
    """Where each of compare's outputs (:data:`OUTPUTS`) goes. Nothing named: all in ``reports_dir``.
    Else each goes where it is named, or beside the one it belongs with: the long CSV beside ``csv``,
    the few-shot and layer files beside ``png``, the others beside the first one named (markdown, csv,
    png, long CSV): none into ``reports_dir`` or the current folder. Two outputs at one path, one
    overwriting the other, are one line."""
    named = {k: Path(v) for k, v in {"markdown": markdown, "csv": csv, "long_csv": long_csv, "png": png}.items() if v}
    home = next(iter(named.values())).parent if named else Path(reports_dir)
    out = {k: named.get(k, home / OUTPUTS[k][1]) for k in ("markdown", "csv", "png")}
    out["long_csv"] = named.get("long_csv", out["csv"].parent / OUTPUTS["long_csv"][1])
    for k in ("fewshot_md", "fewshot_png", "layers_png"):
        out[k] = out["png"].parent / OUTPUTS[k][1]
    seen: dict[str, str] = {}
    for k, path in out.items():
        other = seen.setdefault(os.path.abspath(path), k)
        if other != k:
            raise UserError(f"{OUTPUTS[other][0]} and {OUTPUTS[k][0]} would both be written to {path}; give each "
                                "output a file of its own")
    return out


def check_outputs(paths: dict[str, Path], records: list[dict | Result]) -> None:
    """No output overwrites a file of a result being read (``--csv metrics/b/d/cnn/svm.json``)."""
    from .outcomes import path_for
    from .results import run_record_path

    files = {}
    for rec in as_results(records):
        if rec.path:
            for part in (Path(rec.path), run_record_path(rec.path), path_for(rec.path)):
                files[os.path.realpath(part)] = rec.path
    for k, path in paths.items():
        hit = files.get(os.path.realpath(path))
        if hit:
            raise UserError(f"{OUTPUTS[k][0]} {path} is a file of the result {hit}: writing there would destroy "
                                "it; choose another path")


def write_reports(table: Table, markdown: str | os.PathLike | None, csv_path: str | os.PathLike | None,
                  png: str | os.PathLike | None = None, long_csv: str | os.PathLike | None = None) -> None:
    if markdown:
        atomic_write_text(markdown, to_markdown(table))
    if csv_path:
        atomic_write_text(csv_path, to_csv(table))
    if long_csv:
        atomic_write_text(long_csv, to_long_csv(table))
    if png:
        render_png(table, png)


# -- few-shot curves ------------------------------------------------------------------------------------

Curve = list[tuple[int, float, float, float | None, float | None]]  # (shots, mean %, std %, interval low %, high %)


def fewshot_curves(records: list[dict | Result], level: float = stats.LEVEL) -> dict[tuple[str, str], dict[str, Curve]]:
    """``{(dataset, metric): {"row · head": [(k, mean, std, low, high), ...]}}`` for each record's
    primary metric, from its ``<metric>@<k>shot`` entries (and ``…_std``); the row as the table labels
    it (:func:`labelled`: with its recipe where the backbone has several); ``low``/``high``: the
    t-interval over the run record's draws (None when it lists none)."""
    curves: dict[tuple[str, str], dict[str, Curve]] = {}
    for row, _, rec in labelled(records):
        points = []
        for score in rec.fewshot_points(rec.primary):
            ci = stats.t_interval(rec.per_trial(score), level)
            low, high = (None, None) if ci is None else (max(0.0, 100 * ci.low), min(100.0, 100 * ci.high))
            points.append((score.shots, 100.0 * score.value, 100.0 * (score.std or 0.0), low, high))
        if points:
            label = f"{row} · {rec.head}"
            curves.setdefault((rec.dataset_label, rec.primary), {})[label] = sorted(points)
    return curves


def fewshot_markdown(curves: dict[tuple[str, str], dict[str, Curve]], level: float = stats.LEVEL) -> str:
    out = []
    with_ci = False
    for (dataset, metric), lines in sorted(curves.items()):
        shots = sorted({p[0] for pts in lines.values() for p in pts})
        out.append(f"### {dataset} · {metric} (%), by training images per class\n")
        out.append("| backbone · head | " + " | ".join(f"{k}-shot" for k in shots) + " |")
        out.append("|---|" + "---:|" * len(shots))
        for label, pts in sorted(lines.items()):
            by_k = {p[0]: p for p in pts}
            cells = []
            for k in shots:
                if k not in by_k:
                    cells.append("—")
                    continue
                _, m, s, lo, hi = by_k[k]
                with_ci |= lo is not None
                cells.append(f"{m:.1f} [{lo:.1f}, {hi:.1f}]" if lo is not None else f"{m:.1f} ± {s:.1f}")
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")
    if with_ci:
        out.append(f"In square brackets: {100 * level:g} % interval (t over the seeded draws of every trial).\n")
    return "\n".join(out)


def render_fewshot_png(curves: dict[tuple[str, str], dict[str, Curve]], path: str | os.PathLike) -> None:
    """One panel per (data set, metric): the metric against shots (log scale), with the interval over
    draws as whiskers (± std where there is none)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    panels = sorted(curves.items())
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 4.0), dpi=120, squeeze=False)
    for ax, ((dataset, metric), lines) in zip(axes[0], panels):
        for label, pts in sorted(lines.items()):
            ks, means = [p[0] for p in pts], [p[1] for p in pts]
            err = [[p[1] - p[3] if p[3] is not None else p[2] for p in pts],
                   [p[4] - p[1] if p[4] is not None else p[2] for p in pts]]
            ax.errorbar(ks, means, yerr=err, marker="o", capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xticks(sorted({p[0] for pts in lines.values() for p in pts}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("training images per class")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(dataset, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)


# -- which layer transfers best -----------------------------------------------------------------------


def _natural(name: str) -> list:
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def layer_curves(records: list[dict | Result]) -> dict[tuple[str, str, str], dict[str, list[tuple[str, float]]]]:
    """``{(dataset, head, metric): {row: [(layer, %), ...]}}`` for rows (backbone, recipe: labelled as
    the table does, without the layer) evaluated on more than one layer (``cnnbench extract --layer A
    --layer B``, ``evaluate --layer``), layers in natural order (``blocks.2`` before ``blocks.10``)."""
    per: dict[tuple[str, str, str], dict[str, dict[str, float]]] = {}
    for label, m, rec in labelled(records):
        layer = m.layer
        if not layer:
            continue
        score = rec.score(rec.primary) if rec.primary else None
        if score is not None:
            line = label.removesuffix(f" [{layer}]")
            per.setdefault((rec.dataset_label, rec.head, score.name), {}).setdefault(line, {})[layer] = 100.0 * score.value
    out = {}
    for key, lines in per.items():
        multi = {b: sorted(ls.items(), key=lambda kv: _natural(kv[0])) for b, ls in lines.items() if len(ls) > 1}
        if multi:
            out[key] = multi
    return out


def render_layers_png(curves: dict, path: str | os.PathLike) -> None:
    """One panel per (data set, head, metric): the metric per stored layer, one line per row."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    panels = sorted(curves.items())
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 4.0), dpi=120, squeeze=False)
    for ax, ((dataset, head, metric), lines) in zip(axes[0], panels):
        for backbone, pts in sorted(lines.items()):
            ax.plot([layer for layer, _ in pts], [v for _, v in pts], marker="o", label=backbone)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(f"{dataset} · {head}", fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def save_figure(fig, path: str | os.PathLike) -> None:
    """Lay out, write atomically (a reader never sees half a PNG), close."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = Path(path).with_name(Path(path).name + ".tmp.png")
    try:
        writable_dir(Path(path).parent, create=True)
        fig.savefig(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, WriteError) or exc.errno == errno.ENOSPC:
            raise
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}; choose a folder you can write to") from exc
    finally:
        plt.close(fig)

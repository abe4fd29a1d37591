"""``cnnbench compare``: measured metrics beside the paper's published numbers.

Rows are backbones (the paper's rows first, where a column has a published number); columns are
(data set, head, metric). Values are percentages; ``± x`` is the standard deviation over trials.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import paper
from .jsonio import atomic_write_text

log = logging.getLogger("cnnbench.compare")

Column = tuple[str, str, str]  # dataset, head, metric


@dataclass
class Table:
    columns: list[Column]
    rows: list[str]
    values: dict[tuple[str, Column], float] = field(default_factory=dict)  # percent
    spread: dict[tuple[str, Column], float] = field(default_factory=dict)
    reference_rows: list[str] = field(default_factory=list)

    def cell(self, row: str, col: Column) -> str:
        v = self.values.get((row, col))
        if v is None:
            return "—"
        s = self.spread.get((row, col))
        return f"{v:.1f} ± {s:.1f}" if s else f"{v:.1f}"

    @staticmethod
    def label(col: Column) -> str:
        return f"{col[0]} · {col[1]} · {col[2]} (%)"


def load_records(metrics_dir: str | os.PathLike) -> list[dict]:
    records = []
    for path in sorted(Path(metrics_dir).rglob("*.json")):
        try:
            rec = json.loads(path.read_text())
            if {"backbone", "dataset", "head", "metrics"} <= rec.keys():
                rec["_path"] = str(path)
                records.append(rec)
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("ignoring %s: %s", path, exc)
    return records


def _row_name(rec: dict, multi_layer: set[str]) -> str:
    return f"{rec['backbone']} [{rec['layer']}]" if rec["backbone"] in multi_layer else rec["backbone"]


def build_table(records: list[dict], all_metrics: bool = False, with_paper: bool = True) -> Table:
    layers: dict[str, set[str]] = {}
    for rec in records:
        layers.setdefault(rec["backbone"], set()).add(rec.get("layer") or "")
    multi_layer = {b for b, ls in layers.items() if len(ls) > 1}
    columns: list[Column] = []
    rows: list[str] = []
    table = Table(columns, rows)
    for rec in sorted(records, key=lambda r: (r["backbone"], r.get("layer") or "", r["dataset"], r["head"])):
        metrics = rec["metrics"]
        names = [k for k in metrics if k != "C"] if all_metrics else [rec.get("primary_metric") or next(iter(metrics))]
        row = _row_name(rec, multi_layer)
        if row not in rows:
            rows.append(row)
        for m in names:
            if m not in metrics:
                continue
            col = (rec["dataset"], rec["head"], m)
            if col not in columns:
                columns.append(col)
            table.values[(row, col)] = 100.0 * float(metrics[m])
            if rec.get("std", {}).get(m):
                table.spread[(row, col)] = 100.0 * float(rec["std"][m])
    columns.sort()
    if with_paper:
        for name, published in paper.ROWS.items():
            hits = {col: published[col] for col in columns if col in published}
            if hits:
                table.reference_rows.append(name)
                for col, v in hits.items():
                    table.values[(name, col)] = v
        table.rows[:0] = table.reference_rows
    return table


def to_markdown(table: Table) -> str:
    head = ["backbone"] + [Table.label(c) for c in table.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(table.columns)) + "|"]
    for row in table.rows:
        lines.append("| " + " | ".join([row] + [table.cell(row, c) for c in table.columns]) + " |")
    if table.reference_rows:
        lines.append("")
        lines.append(f"Paper rows: {paper.CITATION}.")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["backbone"] + [Table.label(c) for c in table.columns])
    for row in table.rows:
        vals = table.values
        w.writerow([row] + ["" if (row, c) not in vals else f"{vals[(row, c)]:.2f}" for c in table.columns])
    return buf.getvalue()


def render_terminal(table: Table) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    t = RichTable(title="cnnbench: frozen features vs the paper (values in %)")
    t.add_column("backbone", style="bold")
    for c in table.columns:
        t.add_column(f"{c[0]}\n{c[1]} · {c[2]}", justify="right")
    for row in table.rows:
        style = "dim" if row in table.reference_rows else None
        t.add_row(row, *[table.cell(row, c) for c in table.columns], style=style)
    Console(width=max(100, 24 * (len(table.columns) + 1))).print(t)


def write_reports(table: Table, markdown: str | os.PathLike | None, csv_path: str | os.PathLike | None) -> None:
    if markdown:
        atomic_write_text(markdown, to_markdown(table))
    if csv_path:
        atomic_write_text(csv_path, to_csv(table))

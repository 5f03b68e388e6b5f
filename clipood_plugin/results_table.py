"""Result tables in the paper's layout: mean ± standard deviation over runs (trials, seeds), with the
published rows (``paper_results.json``, one entry per table of the paper) beside ours, for the terminal,
as Markdown and as CSV.

A cell counts the runs it averages: one over fewer runs than expected is marked ``(k/n)``, and every
summary lists its missing or unfinished runs by name. A non-finite value is never averaged. Each summary
reads a run through one checked reader per kind of file, which raises UnusableRun with the reason when the
run cannot be used; the run is then listed with that reason and left out of every mean. The summaries exit
with EXIT_COMPLETE when every expected run was used, EXIT_INCOMPLETE when the tables were written but runs
are listed as missing, unfinished or unusable, and 2 on bad input (nothing to summarize).
"""
import csv
import io
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Optional

from .files import make_dirs, save_atomic
from .settings import DataError
from .write_guard import check_writes, text_holds, text_starts_with

LEGEND = ("mean ± standard deviation (n-1) over runs; (k/n): the mean of the k of n runs that have a value, "
          "the others are listed under 'Missing or unfinished runs'; '-': none has")
CSV_FIELDS = ("table", "row", "source", "column", "mean", "std", "runs", "expected")


EXIT_COMPLETE, EXIT_INCOMPLETE = 0, 1


class ResultsError(ValueError):
    """Runs a summary cannot read as given (none found, two for one cell): the message names the fix."""


class UnusableRun(ValueError):
    """One run a summary cannot use (unreadable, truncated, not what the framework writes, impossible
    values): the message is the reason it is listed with."""


def checked_accuracy(value, what, scale=100):
    """``value`` if it is a finite number in [0, ``scale``] (100: percent, 1: a fraction), else UnusableRun."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnusableRun(f"{what} is {value!r}, not a number")
    if not (math.isfinite(value) and 0 <= value <= scale):
        raise UnusableRun(f"{what} is {value!r}: an accuracy is in [0, {scale}]")
    return float(value)


@dataclass(frozen=True)
class Cell:
    mean: Optional[float] = None
    std: Optional[float] = None
    runs: Optional[int] = None  # values behind the mean; None for a published number
    expected: Optional[int] = None

    @classmethod
    def over(cls, values, expected, mean=None):
        """Mean and sample standard deviation of the finite ``values``; ``mean`` replaces the plain mean
        where a table defines the cell otherwise (H of the mean Base and New)."""
        finite = [float(value) for value in values if value is not None and math.isfinite(value)]
        if not finite:
            return cls(runs=0, expected=expected)
        value = statistics.fmean(finite) if mean is None else mean
        return cls(value if math.isfinite(value) else None, statistics.stdev(finite) if len(finite) > 1 else None,
                   len(finite), expected)

    def text(self, digits):
        return " ".join(filter(None, self.parts(digits)))

    def parts(self, digits):
        """(mean, "± std", "(k/n)"), each possibly empty: the terminal table aligns each part in its own
        sub-column, so that means and standard deviations stay under one another."""
        if self.mean is None:
            return ("" if self.runs is None else "-", "", f"(0/{self.expected})" if self.expected else "")
        return (f"{self.mean:.{digits}f}", "" if self.std is None else f"± {self.std:.{digits}f}",
                f"({self.runs}/{self.expected})" if self.runs is not None and self.runs < self.expected else "")


def mean_accuracy(accuracy, domains=None):
    """The mean of {domain: accuracy} over ``domains`` (all of them by default)."""
    domains = list(accuracy) if domains is None else domains
    return sum(accuracy[d] for d in domains) / len(domains)


def complete_means(columns):
    """{run: mean over the columns} for the runs that have a finite value in every column; each column is
    {run: value}. A run missing anywhere is left out (its cell then shows it), never averaged over less."""
    if not columns:
        return {}
    runs = set.intersection(*({run for run, value in column.items() if value is not None and math.isfinite(value)}
                              for column in columns))
    return {run: statistics.fmean(column[run] for column in columns) for run in sorted(runs)}


def format_table(header, rows, markdown=False):
    """A plain table of text cells (the first column left-aligned, the others right-aligned), or Markdown."""
    if markdown:
        return "\n".join(["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
                         + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(row, widths))) for row in [header, *rows])


def _aligned(header, parts):
    """The cells of one column as text: means right-aligned, then "± std" and "(k/n)" left-aligned, each
    in its own sub-column, the whole right-aligned under ``header``."""
    widths = [max([len(part[i]) for part in parts] + [0]) for i in range(3)]
    texts = []
    for mean, std, count in parts:
        text = mean.rjust(widths[0])
        if widths[1]:
            text += " " + std.ljust(widths[1])
        if widths[2]:
            text += " " + count.ljust(widths[2])
        texts.append(text.rstrip())
    width = max(map(len, texts + [header]))
    return [text.ljust(max(map(len, texts))).rjust(width) for text in texts]


@dataclass
class Row:
    label: str
    cells: dict  # column -> Cell
    published: bool = False


@dataclass
class Table:
    title: str
    columns: list
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)


@dataclass
class Report:
    tables: list
    missing: list  # one line per missing or unfinished run
    digits: int = 1

    def _cells(self, table, row):
        return [row.cells.get(column, Cell()).text(self.digits) for column in table.columns]

    def text(self):
        blocks = []
        for table in self.tables:
            columns = [[row.label for row in table.rows]]
            for column in table.columns:
                parts = [row.cells.get(column, Cell()).parts(self.digits) for row in table.rows]
                columns.append(_aligned(column, parts))
            widths = [max(map(len, [header, *column])) for header, column in zip(["", *table.columns], columns)]
            header = "  ".join(name.ljust(width) if i == 0 else name.rjust(width)
                               for i, (name, width) in enumerate(zip(["", *table.columns], widths)))
            lines = [f"== {table.title}", header.rstrip()]
            lines += ["  ".join(column[r].ljust(width) if i == 0 else column[r].rjust(width)
                                for i, (column, width) in enumerate(zip(columns, widths))).rstrip()
                      for r in range(len(table.rows))]
            blocks.append("\n".join(lines + table.notes))
        blocks.append(LEGEND)
        blocks.append("\n".join(["Missing or unfinished runs:"] + [f"  {line}" for line in self.missing])
                      if self.missing else "Missing or unfinished runs: none")
        return "\n\n".join(blocks)

    def markdown(self):
        blocks = []
        for table in self.tables:
            lines = [f"## {table.title}", "", "| | " + " | ".join(table.columns) + " |",
                     "|---|" + "---|" * len(table.columns)]
            lines += [f"| {row.label} | " + " | ".join(self._cells(table, row)) + " |" for row in table.rows]
            blocks.append("\n\n".join(["\n".join(lines)] + table.notes))
        blocks.append(LEGEND)
        blocks.append("\n".join(["## Missing or unfinished runs", ""] + [f"- {line}" for line in self.missing])
                      if self.missing else "## Missing or unfinished runs\n\nnone")
        return "\n\n".join(blocks) + "\n"

    def write(self, prefix):
        """Writes ``prefix.md`` and ``prefix.csv`` (one line per cell, full precision) atomically; returns both
        paths. A write the file system refuses raises DataError."""
        make_dirs(os.path.dirname(os.path.abspath(prefix)))
        markdown, table_csv = prefix + ".md", prefix + ".csv"
        lines = io.StringIO(newline="")
        writer = csv.writer(lines)
        writer.writerow(CSV_FIELDS)
        for table in self.tables:
            for row in table.rows:
                for column in table.columns:
                    cell = row.cells.get(column, Cell())
                    if cell.mean is None and cell.runs is None:
                        continue  # the paper prints nothing there
                    writer.writerow([table.title, row.label, "paper" if row.published else "ours", column,
                                     *("" if value is None else value
                                       for value in (cell.mean, cell.std, cell.runs, cell.expected))])
        for path, text in ((markdown, self.markdown()), (table_csv, lines.getvalue())):
            save_atomic(lambda file, text=text: file.write(text.encode("utf-8")), path)
        return markdown, table_csv


def output_prefix(out, default_dir, name):
    """Where a summary writes its .md and .csv: ``out`` as a path prefix, or ``out/name`` when ``out`` is a
    folder, else ``default_dir/name``."""
    if out is None:
        return os.path.join(default_dir, name)
    if os.path.isdir(out) or out.endswith(os.sep):
        return os.path.join(out, name)
    return out


def add_output_arguments(parser, default_prefix):
    """``--paper``, ``--out`` and ``--overwrite``, the options of every summary command."""
    parser.add_argument("--paper", action="store_true", help="add the published rows beside ours")
    parser.add_argument("--out", help="path prefix of the .md and .csv, or a folder for them "
                                      f"(default: {default_prefix})")
    parser.add_argument("--overwrite", action="store_true", help="replace a .md or .csv that no summary wrote "
                                                                 "(never a file of a `clipood train` run)")


def written_by_a_summary(path):
    """Whether ``path`` is a .md or .csv that Report.write wrote (recognized by its legend, its CSV header)."""
    if str(path).endswith(".csv"):
        return text_starts_with(path, ",".join(CSV_FIELDS))
    return text_holds(path, LEGEND)


def print_and_write(report, out, default_dir, name, overwrite=False):
    """The terminal table, then its Markdown and CSV where ``output_prefix`` says; returns the exit code:
    EXIT_INCOMPLETE when the report lists runs it lacks, else EXIT_COMPLETE; 2 (one line) when the files
    cannot be written, or are files no summary wrote (unless ``overwrite``: write_guard.check_writes)."""
    prefix = output_prefix(out, default_dir, name)
    try:
        check_writes({prefix + ".md": "the Markdown table", prefix + ".csv": "the CSV table"}, "clipood summary",
                     "--out", overwrite=overwrite, written_here=written_by_a_summary)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.text())
    try:
        print("written: " + ", ".join(report.write(prefix)))
    except DataError as error:
        print(f"error: {error}; pass --out with a writable place", file=sys.stderr)
        return 2
    return EXIT_INCOMPLETE if report.missing else EXIT_COMPLETE


@lru_cache(maxsize=None)
def paper_tables():
    """The published numbers, {table number: {"title", "rows": [...]}} (``paper_results.json``)."""
    with resources.files(__package__).joinpath("paper_results.json").open(encoding="utf-8") as f:
        return json.load(f)["tables"]


def paper_rows(table, **match):
    """The rows of the paper's table ``table`` (1-4) whose fields equal ``match``."""
    return [row for row in paper_tables()[str(table)]["rows"] if all(row.get(k) == v for k, v in match.items())]


def published_rows(table, prefix="", rename=None, **match):
    """Rows labelled ``<prefix><method>[, <backbone>] (paper)`` with the paper's cells; ``rename`` ({paper
    column: ours}), when given, keeps only its columns, under our names. Rows left without a cell are dropped."""
    rows = []
    for row in paper_rows(table, **match):
        label = ", ".join(filter(None, (row["method"], row.get("backbone"))))
        cells = {column if rename is None else rename[column]: Cell(*printed)
                 for column, printed in row["cells"].items() if rename is None or column in rename}
        if cells:
            rows.append(Row(f"{prefix}{label} (paper)", cells, published=True))
    return rows

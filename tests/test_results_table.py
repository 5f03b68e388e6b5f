"""Published numbers (paper_results.json against the tables as printed) and the table formatting shared
by the DomainBed and Dassl summaries."""
import csv
import json
import math
import re
from pathlib import Path
from statistics import mean, stdev

import pytest

from clipood_plugin.results_table import (Cell, Report, Row, Table, complete_means, output_prefix, paper_tables,
                                          print_and_write)

ROOT = Path(__file__).resolve().parents[1]
PAPER_TABLES = next((path for path in (ROOT.parent / "shared" / "design" / "PAPER_TABLES.md",
                                       ROOT / "shared" / "design" / "PAPER_TABLES.md") if path.exists()), None)


def printed_tables(text):
    """{table number: (header, [row cells])} from the Markdown tables of PAPER_TABLES.md."""
    tables = {}
    for section in re.split(r"^## Table ", text, flags=re.M)[1:]:
        lines = [line for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")]
        rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
        tables[section.split(":")[0]] = (rows[0], rows[1:])
    return tables


def number(cell):
    """'97.3 ± 0.1' -> [97.3, 0.1]; '96.2' -> [96.2, None]."""
    parts = cell.split("±")
    return [float(parts[0]), float(parts[1]) if len(parts) > 1 else None]


def as_set(rows):
    return sorted(json.dumps(row, sort_keys=True) for row in rows)


@pytest.mark.skipif(PAPER_TABLES is None, reason="../shared/design/PAPER_TABLES.md is not reachable from the repo root")
def test_published_numbers_are_the_tables_as_printed():
    printed = printed_tables(PAPER_TABLES.read_text(encoding="utf-8"))
    data = paper_tables()

    header, rows = printed["1"]  # the rows with a CLIP backbone; DomainBed's name for TerraInc
    columns = [{"TerraInc": "TerraIncognita"}.get(name, name) for name in header[2:]]
    expected = [{"method": row[0], "backbone": row[1], "cells": dict(zip(columns, map(number, row[2:])))}
                for row in rows if row[1] == "CLIP" and row[0] in ("Zero-shot", "ERM", "CLIPood")]
    assert len(expected) == 3 and as_set(data["1"]["rows"]) == as_set(expected)

    header, rows = printed["2"]
    columns = [name if name in ("ImageNet", "OOD avg") else "ImageNet" + name for name in header[1:]]
    assert as_set(data["2"]["rows"]) == as_set(
        [{"method": row[0], "cells": dict(zip(columns, map(number, row[1:])))} for row in rows])

    header, rows = printed["3"]  # "avg Base" ... "ImageNet H": two datasets only, none invented
    assert header[1:] == ["avg Base", "avg New", "avg H", "ImageNet Base", "ImageNet New", "ImageNet H"]
    expected = [{"method": row[0], "dataset": dataset, "cells": dict(zip(["Base", "New", "H"], map(number, cells)))}
                for row in rows for dataset, cells in (("Average", row[1:4]), ("ImageNet", row[4:7]))]
    assert as_set(data["3"]["rows"]) == as_set(expected)

    header, rows = printed["4"]  # OfficeHome A C P R, then DomainNet C I P Q R S
    expected = [{"split": row[0], "method": row[1], "dataset": dataset, "cells": dict(zip(domains, map(number, cells)))}
                for row in rows for dataset, domains, cells in (("OfficeHome", header[2:6], row[2:6]),
                                                                ("DomainNet", header[6:12], row[6:12]))]
    assert as_set(data["4"]["rows"]) == as_set(expected)


def test_a_cell_is_the_mean_and_sample_std_of_its_finite_values_and_says_how_many():
    values = [61.0, 64.5, 60.25]
    cell = Cell.over(values, expected=3)
    assert (cell.mean, cell.std, cell.runs) == (pytest.approx(mean(values)), pytest.approx(stdev(values)), 3)
    assert cell.text(1) == f"{mean(values):.1f} ± {stdev(values):.1f}"
    partial = Cell.over([61.0, float("nan"), 64.0], expected=3)  # NaN is a missing run, never averaged
    assert (partial.mean, partial.runs) == (62.5, 2) and partial.text(2).endswith(" (2/3)")
    assert Cell.over([70.0], expected=3).text(1) == "70.0 (1/3)"  # one run: no std
    assert Cell.over([], expected=3).text(1) == "- (0/3)"
    assert Cell(97.3, 0.1).text(1) == "97.3 ± 0.1" and Cell(96.2).text(1) == "96.2" and Cell().text(1) == ""
    assert Cell.over([80.0, 82.0], 2, mean=79.0).mean == 79.0


def test_complete_means_average_each_run_over_all_columns_and_leave_incomplete_runs_out():
    columns = [{0: 90.0, 1: 80.0, 2: 70.0}, {0: 60.0, 1: math.inf, 2: 50.0}, {0: 30.0, 2: 40.0}]
    assert complete_means(columns) == {0: pytest.approx(60.0), 2: pytest.approx(mean([70.0, 50.0, 40.0]))}
    assert complete_means([]) == {}


@pytest.fixture
def report():
    ours = Row("CLIPood", {"PACS": Cell.over([97.0, 97.5, 96.5], 3), "Avg": Cell.over([80.0, 81.0], 3)})
    paper = Row("CLIPood (paper)", {"PACS": Cell(97.3, 0.1)}, published=True)
    return Report([Table("Table X", ["PACS", "Avg"], [ours, paper], notes=["a note"])],
                  ["PACS CLIPood test env 1 trial 2: no run"], digits=1)


def test_terminal_and_markdown_show_the_rows_notes_and_missing_runs(report):
    text = report.text()
    assert "== Table X" in text and "97.0 ± 0.5" in text and "80.5 ± 0.7 (2/3)" in text and "a note" in text
    assert "Missing or unfinished runs:\n  PACS CLIPood test env 1 trial 2: no run" in text
    markdown = report.markdown()
    assert "| | PACS | Avg |" in markdown and "| CLIPood (paper) | 97.3 ± 0.1 |  |" in markdown
    assert "- PACS CLIPood test env 1 trial 2: no run" in markdown
    assert "Missing or unfinished runs: none" in Report([], []).text()


def test_csv_has_one_line_per_cell_at_full_precision(report, tmp_path):
    markdown, table_csv = report.write(str(tmp_path / "out" / "summary"))
    assert Path(markdown).read_text(encoding="utf-8") == report.markdown()
    with open(table_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["row"], r["source"], r["column"]) for r in rows] == [
        ("CLIPood", "ours", "PACS"), ("CLIPood", "ours", "Avg"), ("CLIPood (paper)", "paper", "PACS")]
    assert float(rows[1]["mean"]) == mean([80.0, 81.0]) and float(rows[1]["std"]) == stdev([80.0, 81.0])
    assert (rows[1]["runs"], rows[1]["expected"]) == ("2", "3")
    assert (rows[2]["mean"], rows[2]["std"], rows[2]["runs"]) == ("97.3", "0.1", "")


def test_output_prefix_is_a_prefix_or_a_folder(tmp_path):
    assert output_prefix(None, "sweep", "summary") == str(Path("sweep") / "summary")
    assert output_prefix(str(tmp_path), "sweep", "summary") == str(tmp_path / "summary")
    assert output_prefix(str(tmp_path / "t1"), "sweep", "summary") == str(tmp_path / "t1")


def test_tables_that_cannot_be_written_are_one_line_and_exit_2(report, tmp_path, capsys):
    """Where --out cannot be written (a file where a folder is needed), no traceback and nothing written."""
    (tmp_path / "a_file").write_text("kept")
    assert print_and_write(report, str(tmp_path / "a_file" / "t"), str(tmp_path), "summary") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "cannot create the folder" in error and "--out" in error
    assert (tmp_path / "a_file").read_text() == "kept"

"""The run report of `clipood train`: the text table's columns line up whatever the names' lengths, the plot's
legend is off the curves, and results.json reads back as written."""
import re

import pytest

from clipood_plugin.run_report import read_results, report, results_figure, write_results


def finished_run(averaging="uniform", splits=("a very long split name (holdout)", "sketch"), wise_ft=False):
    accuracy = {split: 100.0 * (i + 1) / (len(splits) + 1) for i, split in enumerate(splits)}
    history = [{"step": step, "final": accuracy, "bma": accuracy} for step in (0, 2, 4)]
    results = {"config": {"averaging": averaging, "pretrained": "none", "bma_beta": 0.5},
               "test_domains": ["sketch"], "history": history, "losses": [1.5, 1.4, 1.2, 1.1],
               "bma_weights": [0.1, 0.2, 0.3, 0.2, 0.1],
               "accuracy": {"zero_shot": accuracy, "final": accuracy, "bma": accuracy},
               "test_mean": {"zero_shot": 26.0, "final": 100 / 3, "bma": 100 / 3}}
    if wise_ft:
        results["wise_ft"] = {"best_alpha": 0.5, "curve": [
            {"alpha": alpha, "accuracy": accuracy, "holdout_mean": 33.3, "test_mean": 66.7} for alpha in (0, 0.5, 1)]}
    return results


def column_ends(line):
    """Where each cell after the first ends: the table's number columns are right-aligned."""
    return [match.end() for match in re.finditer(r"\S+(?: \S+)*", line)][1:]


@pytest.mark.parametrize("averaging", ["uniform", "bma", "none", "swad"])
def test_the_accuracy_table_keeps_each_number_under_its_header(averaging):
    lines = report(finished_run(averaging)).splitlines()
    header, rows = lines[0], lines[1:]
    assert header.split()[:2] == ["accuracy", "(%)"] and len(rows) == 3
    assert all(column_ends(row) == column_ends(header) for row in rows), "\n".join(lines)
    assert rows[-1].startswith("test mean ") and rows[-1].split()[2:] == ["26.0", "33.3", "33.3"]


def test_the_wise_ft_curve_follows_with_the_best_alpha_marked():
    lines = report(finished_run(wise_ft=True)).splitlines()
    curve = lines[lines.index(next(line for line in lines if line.startswith("WiSE-FT alpha"))):]
    assert curve[0].split("  ") == ["WiSE-FT alpha", "holdout mean", "test mean"]
    assert [line.endswith("<- best on the holdout") for line in curve[1:]] == [False, True, False]
    assert [line.split()[0] for line in curve[1:]] == ["0", "0.5", "1"]


def test_the_legend_does_not_cover_the_accuracy_curves():
    import matplotlib.pyplot as plt

    figure = results_figure(finished_run())
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    axes = next(axes for axes in figure.axes if axes.get_legend())
    legend, plot_area = axes.get_legend().get_window_extent(renderer), axes.get_window_extent(renderer)
    assert not legend.overlaps(plot_area)
    assert figure.bbox.contains(legend.x0, legend.y0) and figure.bbox.contains(legend.x1, legend.y1)  # not cut off
    plt.close(figure)


def test_results_json_reads_back_as_written(tmp_path):
    results = finished_run(wise_ft=True)
    write_results(results, tmp_path / "results.json")
    read = read_results(tmp_path / "results.json")
    assert read["bma"] == {"sketch": results["accuracy"]["bma"]["sketch"]}
    assert (read["mean_bma"], read["mean_final"]) == (pytest.approx(100 / 3), pytest.approx(100 / 3))
    assert read["wise_ft"]["best_alpha"] == 0.5 and read_results(tmp_path / "absent.json") is None

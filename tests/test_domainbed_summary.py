"""The DomainBed sweep summary on generated sweep folders in DomainBed's format (results.jsonl rows as
train.py writes them, ``done`` markers, evaluate_open's results), with DomainBed's own model selection.

Skipped unless ``import domainbed`` works (a DomainBed checkout on PYTHONPATH, or DOMAINBED_ROOT).
"""
import csv
import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from statistics import mean, stdev

import pytest


pytestmark = pytest.mark.needs("domainbed")
PAPER = json.loads((Path(__file__).resolve().parents[1] / "clipood_plugin" / "paper_results.json").read_text())
ENVIRONMENTS = {"PACS": 4, "VLCS": 4, "OfficeHome": 4, "TerraIncognita": 4, "DomainNet": 6}
STEPS = (0, 300, 600)


def write_run(sweep, dataset, algorithm, test_env, trial, rng, done=True, open_class_ratio=0.0):
    """One run folder as DomainBed's sweep and train.py leave it; returns its results.jsonl rows."""
    args = {"algorithm": algorithm, "checkpoint_freq": 300, "data_dir": "/data", "dataset": dataset,
            "holdout_fraction": 0.2, "hparams": None, "hparams_seed": 0, "save_model_every_checkpoint": False,
            "seed": 0, "skip_model_save": False, "steps": 601, "task": "domain_generalization",
            "test_envs": [test_env], "trial_seed": trial, "uda_holdout_fraction": 0}
    folder = Path(sweep) / hashlib.md5(json.dumps(args, sort_keys=True).encode()).hexdigest()
    args["output_dir"] = str(folder)
    folder.mkdir(parents=True)
    hparams = {"lr": 5e-6, "batch_size": 12, "mms_lambda": 0.3, "bma_beta": 0.5, "open_class_ratio": open_class_ratio}
    rows = []
    for step in STEPS:
        row = {"step": step, "epoch": step / 100, "loss": rng.random(), "mem_gb": 0.0, "step_time": 0.1,
               "hparams": hparams, "args": args}
        for env in range(ENVIRONMENTS[dataset]):
            row[f"env{env}_in_acc"], row[f"env{env}_out_acc"] = rng.randint(0, 400) / 400, rng.randint(0, 100) / 100
        rows.append(row)
    (folder / "results.jsonl").write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
    if done:
        (folder / "done").write_text("done")
    return folder, rows


def training_domain_validation(rows, test_env):
    """DomainBed's training-domain validation, written out: the row with the best mean out-split accuracy
    of the training domains gives the test domain's in-split accuracy."""
    envs = range(sum(key.endswith("_out_acc") and key.startswith("env") for key in rows[0]))
    best = max(rows, key=lambda row: mean(row[f"env{env}_out_acc"] for env in envs if env != test_env))
    return 100 * best[f"env{test_env}_in_acc"]


def final_model(rows, test_env, split):
    return 100 * max(rows, key=lambda row: row["step"])[f"env{test_env}_{split}_acc"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """PACS and VLCS x CLIPood and CLIPERM x 4 test envs x 3 trials, all finished: {key: rows}."""
    folder = tmp_path_factory.mktemp("sweep")
    rng = random.Random(0)
    runs = {(dataset, algorithm, env, trial): write_run(folder, dataset, algorithm, env, trial, rng)
            for dataset in ("PACS", "VLCS") for algorithm in ("CLIPood", "CLIPERM")
            for env in range(4) for trial in range(3)}
    return folder, runs


def table(report, title_start):
    return next(t for t in report.tables if t.title.startswith(title_start))


def cells(report, title_start, label):
    found = table(report, title_start)
    return next(row.cells for row in found.rows if row.label == label)


def expected_tables(runs, choose):
    """{(dataset, algorithm): (per env [values over trials], [per-trial average over envs])}, each value
    ``choose(rows, env)``."""
    result = {}
    for dataset, algorithm in {(d, a) for d, a, _, _ in runs}:
        per_env = [[choose(runs[(dataset, algorithm, env, trial)][1], env) for trial in range(3)] for env in range(4)]
        result[(dataset, algorithm)] = per_env, [mean(values) for values in zip(*per_env)]
    return result


@pytest.mark.parametrize("selection, split, choose", [
    ("training_domain", "out", training_domain_validation),
    ("final", "out", lambda rows, env: final_model(rows, env, "out")),
    ("final", "in", lambda rows, env: final_model(rows, env, "in")),
])
def test_per_domain_and_table1_cells_are_mean_and_std_over_trials(sweep, selection, split, choose):
    from domainbed_adapter.summary import summarize
    folder, runs = sweep
    report = summarize(str(folder), selection, split)
    expected = expected_tables(runs, choose)
    name = "training-domain validation set" if selection == "training_domain" else \
        f"final model (end of training), test domain {split} split"
    assert [t.title for t in report.tables] == [
        f"PACS: test accuracy per test domain, model selection: {name}",
        f"VLCS: test accuracy per test domain, model selection: {name}",
        f"Table 1 layout: average over the test domains of each dataset, model selection: {name}"]
    for (dataset, algorithm), (per_env, averages) in expected.items():
        row = cells(report, dataset, algorithm)
        for env_name, values in zip(["A", "C", "P", "S"] if dataset == "PACS" else ["C", "L", "S", "V"], per_env):
            assert row[env_name].mean == pytest.approx(mean(values))
            assert row[env_name].std == pytest.approx(stdev(values))
        assert (row["Avg"].mean, row["Avg"].std) == (pytest.approx(mean(averages)), pytest.approx(stdev(averages)))
        assert cells(report, "Table 1", algorithm)[dataset].mean == pytest.approx(mean(averages))
    for algorithm in ("CLIPood", "CLIPERM"):
        both = [mean(pair) for pair in zip(expected[("PACS", algorithm)][1], expected[("VLCS", algorithm)][1])]
        avg = cells(report, "Table 1", algorithm)["Avg"]
        assert (avg.mean, avg.std, avg.runs) == (pytest.approx(mean(both)), pytest.approx(stdev(both)), 3)
    assert report.missing == []


@pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")  # DomainBed's lib/misc.py
def test_training_domain_cells_match_domainbeds_own_collect_results(sweep, capsys):
    from domainbed import model_selection
    from domainbed.lib import reporting
    from domainbed.scripts import collect_results
    from domainbed_adapter.summary import summarize
    folder = str(sweep[0])
    collect_results.print_results_tables(reporting.load_records(folder), model_selection.IIDAccuracySelectionMethod,
                                         latex=False)
    printed = capsys.readouterr().out
    report = summarize(folder)
    for dataset, envs in (("PACS", "ACPS"), ("VLCS", "CLSV")):
        section = printed.split(f"Dataset: {dataset}, model selection method: training-domain validation set")[1]
        for algorithm in ("CLIPood", "CLIPERM"):
            line = next(line for line in section.splitlines() if line.startswith(algorithm))
            theirs = [float(m) for m, _ in re.findall(r"([\d.]+) \+/- ([\d.]+)", line)]  # mean +/- standard error
            ours = cells(report, dataset, algorithm)
            assert len(theirs) == 4 and [ours[env].mean for env in envs] == pytest.approx(theirs, abs=0.051)


@pytest.fixture
def incomplete_sweep(sweep, tmp_path):
    """The sweep with PACS CLIPood env 1 trial 2 unfinished and VLCS CLIPERM env 3 trial 0 never launched."""
    folder, runs = sweep
    copy = tmp_path / "sweep"
    shutil.copytree(folder, copy)
    unfinished = copy / runs[("PACS", "CLIPood", 1, 2)][0].name
    (unfinished / "done").unlink()
    shutil.rmtree(copy / runs[("VLCS", "CLIPERM", 3, 0)][0].name)
    (copy / "launched_not_started").mkdir()
    return copy, runs, unfinished


def test_missing_and_unfinished_runs_are_listed_and_never_averaged(incomplete_sweep):
    from domainbed_adapter.summary import summarize
    folder, runs, unfinished = incomplete_sweep
    report = summarize(str(folder), "final", "out")
    assert report.missing == [
        f"{folder / 'launched_not_started'}: no results.jsonl (not started, or not a run folder)",
        f"PACS CLIPood test env 1 (C) trial 2: unfinished (no done file): {unfinished}",
        "VLCS CLIPERM test env 3 (V) trial 0: no usable run"]
    choose = lambda rows, env: final_model(rows, env, "out")  # noqa: E731
    pacs_c = [choose(runs[("PACS", "CLIPood", 1, trial)][1], 1) for trial in (0, 1)]
    cell = cells(report, "PACS", "CLIPood")["C"]
    assert (cell.mean, cell.runs, cell.expected) == (pytest.approx(mean(pacs_c)), 2, 3)
    assert cell.text(1).endswith("(2/3)")
    per_trial = [mean(choose(runs[("PACS", "CLIPood", env, trial)][1], env) for env in range(4)) for trial in (0, 1)]
    average = cells(report, "PACS", "CLIPood")["Avg"]  # trial 2 lacks env 1: left out, not averaged over 3 envs
    assert (average.mean, average.std, average.runs) == (
        pytest.approx(mean(per_trial)), pytest.approx(stdev(per_trial)), 2)
    assert cells(report, "Table 1", "CLIPERM")["Avg"].runs == 2  # trial 0 of VLCS is incomplete
    assert "VLCS CLIPERM test env 3 (V) trial 0: no usable run" in report.text()


def test_paper_rows_are_the_published_table1_rows(sweep):
    from domainbed_adapter.summary import summarize
    report = summarize(str(sweep[0]), paper=True)
    published = {row["method"]: row["cells"] for row in PAPER["tables"]["1"]["rows"]}
    for method in ("CLIPood", "ERM", "Zero-shot"):
        label = f"{method}, CLIP (paper)"
        pacs = cells(report, "PACS", label)["Avg"]
        assert [pacs.mean, pacs.std] == published[method]["PACS"]
        table1 = cells(report, "Table 1", label)
        assert [table1["VLCS"].mean, table1["VLCS"].std] == published[method]["VLCS"]
        assert "Avg" not in table1  # the published Avg is over five datasets, this sweep has two
    assert "the published Avg is over PACS, VLCS, OfficeHome, TerraIncognita, DomainNet" in report.text()
    assert not any(row.published for t in summarize(str(sweep[0])).tables for row in t.rows)


def test_the_published_average_is_shown_when_the_sweep_has_table1s_datasets(tmp_path):
    from domainbed_adapter.summary import summarize
    rng = random.Random(1)
    for dataset, count in ENVIRONMENTS.items():
        for env in range(count):
            write_run(tmp_path, dataset, "CLIPood", env, 0, rng)
    report = summarize(str(tmp_path), paper=True)
    assert table(report, "Table 1").columns == ["PACS", "VLCS", "OfficeHome", "TerraIncognita", "DomainNet", "Avg"]
    assert cells(report, "Table 1", "CLIPood, CLIP (paper)")["Avg"].mean == 78.6


def write_open_results(folder, rows, rng):
    """open_class_results.json as evaluate_open writes it, for every env and split: accuracies are correct
    predictions over images, and the whole domain ("all") is the in and out splits' images together."""
    results = {"num_base_classes": 32, "num_classes": 65, "test_envs": rows[0]["args"]["test_envs"]}
    for env in range(4):
        counts = {split: {kind: rng.randint(10, 30) for kind in ("base", "new")} for split in ("in", "out")}
        correct = {split: {kind: rng.randint(0, n) for kind, n in by_kind.items()} for split, by_kind in counts.items()}
        counts["all"] = {kind: counts["in"][kind] + counts["out"][kind] for kind in ("base", "new")}
        correct["all"] = {kind: correct["in"][kind] + correct["out"][kind] for kind in ("base", "new")}
        for split in ("in", "out", "all"):
            for kind in ("base", "new"):
                results[f"env{env}_{split}_{kind}_acc"] = correct[split][kind] / counts[split][kind]
                results[f"env{env}_{split}_{kind}_count"] = counts[split][kind]
                results[f"env{env}_{split}_{kind}_correct"] = correct[split][kind]  # for the tests only
    (folder / "open_class_results.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    return results


def test_in_the_wild_runs_give_table4_base_new_total_from_evaluate_open(tmp_path, capsys):
    from domainbed_adapter import summary
    rng = random.Random(2)
    results = {}
    for env in range(4):
        for trial in range(3):
            folder, rows = write_run(tmp_path, "OfficeHome", "CLIPood", env, trial, rng, open_class_ratio=0.5)
            if (env, trial) != (2, 1):  # not evaluated yet
                results[(env, trial)] = write_open_results(folder, rows, rng)
    report = summary.summarize(str(tmp_path), split="out", paper=True)
    assert [t.title for t in report.tables] == [
        "Table 4 layout, OfficeHome: base / new / total accuracy per test domain, final model, test domain out split"]
    assert report.missing == [f"OfficeHome CLIPood test env 2 trial 1 (in the wild): not evaluated: run python -m "
                              f"domainbed_adapter.evaluate_open --input_dir {tmp_path}"]
    for env, name in enumerate("ACPR"):
        trials = [trial for trial in range(3) if (env, trial) in results]
        base = [100 * results[(env, t)][f"env{env}_out_base_acc"] for t in trials]
        new = [100 * results[(env, t)][f"env{env}_out_new_acc"] for t in trials]
        counts = [(results[(env, t)][f"env{env}_out_base_count"], results[(env, t)][f"env{env}_out_new_count"])
                  for t in trials]
        total = [(b * nb + n * nn) / (nb + nn) for b, n, (nb, nn) in zip(base, new, counts)]
        for split, values in (("Base", base), ("New", new), ("Total", total)):
            cell = cells(report, "Table 4", f"{split}: CLIPood")[name]
            assert (cell.mean, cell.std, cell.runs, cell.expected) == (
                pytest.approx(mean(values)), pytest.approx(stdev(values)), len(values), 3)
    for row in PAPER["tables"]["4"]["rows"]:
        if row["dataset"] == "OfficeHome":
            published = cells(report, "Table 4", f"{row['split']}: {row['method']} (paper)")
            assert {name: [cell.mean, cell.std] for name, cell in published.items()} == row["cells"]

    # exit 1: the tables are written, and a run is listed as missing
    assert summary.main(["--input_dir", str(tmp_path), "--paper", "--split", "out",
                         "--out", str(tmp_path / "tables") + os.sep]) == 1
    assert "Total: CoOp (paper)" in capsys.readouterr().out
    with open(tmp_path / "tables" / "summary_training_domain.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    base_a = next(r for r in rows if r["row"] == "Base: CLIPood" and r["column"] == "A")
    assert float(base_a["mean"]) == pytest.approx(cells(report, "Table 4", "Base: CLIPood")["A"].mean)
    assert "| Base: CLIPood (paper) | 90.1 ± 0.2 |" in (tmp_path / "tables" / "summary_training_domain.md").read_text()


def test_in_the_wild_scores_the_whole_test_domain_by_default_from_correct_counts(tmp_path, capsys):
    """Issue 16: the authors score the whole target domain. Base, New and Total of split all are the correct
    predictions of both splits over their images, computed here by hand from the counts."""
    from domainbed_adapter import summary
    rng = random.Random(3)
    results, folders = {}, {}
    for env in range(4):
        folders[env], rows = write_run(tmp_path, "OfficeHome", "CLIPood", env, 0, rng, open_class_ratio=0.5)
        results[env] = write_open_results(folders[env], rows, rng)
    report = summary.summarize(str(tmp_path))
    assert [t.title for t in report.tables] == ["Table 4 layout, OfficeHome: base / new / total accuracy per test "
                                                "domain, final model, the whole test domain (split all)"]
    for env, name in enumerate("ACPR"):
        r = results[env]
        correct = {kind: r[f"env{env}_in_{kind}_correct"] + r[f"env{env}_out_{kind}_correct"]
                   for kind in ("base", "new")}
        images = {kind: r[f"env{env}_in_{kind}_count"] + r[f"env{env}_out_{kind}_count"] for kind in ("base", "new")}
        by_hand = {"Base": 100 * correct["base"] / images["base"], "New": 100 * correct["new"] / images["new"],
                   "Total": 100 * (correct["base"] + correct["new"]) / (images["base"] + images["new"])}
        for column, value in by_hand.items():
            assert cells(report, "Table 4", f"{column}: CLIPood")[name].mean == pytest.approx(value, abs=1e-9)
    assert summary.main(["--input_dir", str(tmp_path)]) == 0 and "(split all)" in capsys.readouterr().out
    assert summary.main(["--input_dir", str(tmp_path), "--split", "in"]) == 0
    assert "test domain in split" in capsys.readouterr().out
    # a whole domain that is not its two splits together is not averaged in
    env = 2
    path = folders[env] / "open_class_results.json"
    damaged = json.loads(path.read_text())
    damaged[f"env{env}_all_base_count"] += 1
    path.write_text(json.dumps(damaged))
    left_out = summary.summarize(str(tmp_path))
    assert any("is not its in and out splits together" in line for line in left_out.missing)
    assert cells(left_out, "Table 4", "Base: CLIPood")["ACPR"[env]].runs == 0


def test_final_model_table_is_the_summary_under_the_final_model_and_names_its_split(sweep, tmp_path, capsys):
    from domainbed_adapter import final_model_table
    assert final_model_table.main(["--input_dir", str(sweep[0]), "--split", "in", "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "model selection: final model (end of training), test domain in split" in out
    assert (tmp_path / "t.md").exists() and (tmp_path / "t.csv").exists()
    # results.jsonl records the test domain's in and out splits only: the whole domain is refused in one line
    with pytest.raises(SystemExit) as exit_info:
        final_model_table.main(["--input_dir", str(sweep[0]), "--split", "all"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1 and "out or in" in error


def test_a_folder_without_runs_is_one_line_and_exit_code_2(tmp_path, capsys):
    from domainbed_adapter import summary
    for folder in (tmp_path / "missing", tmp_path):
        with pytest.raises(SystemExit) as exit_info:
            summary.main(["--input_dir", str(folder)])
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and error.count("\n") == 1 and "DomainBed sweep" in error


# ----------------------------------------------------------------------------- runs that cannot be used
def rewrite(folder, edit):
    """results.jsonl of a run folder, its rows passed through ``edit(rows) -> lines``."""
    path = folder / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(line + "\n" for line in edit(rows)))


def dump(rows):
    return [json.dumps(row) for row in rows]


DAMAGE = {  # (test env, trial): (what is done to the run, the reason it must be listed with)
    (0, 0): (lambda rows: dump(rows[:1]), "no row at its last step 600"),  # F-H15: the zero-shot row left
    (0, 1): (lambda rows: dump(rows[:-1] + [{**rows[-1], "env0_in_acc": 7.5}]), "an accuracy is in [0, 1]"),  # F-L6
    (1, 0): (lambda rows: dump(rows) + ["{}"], "line 4 has no args"),  # F-M16
    (1, 1): (lambda rows: ["[1, 2]"] + dump(rows), "line 1 is list"),
    (1, 2): (lambda rows: dump(rows) + ["null"], "line 4 is NoneType"),
    (2, 0): (lambda rows: dump([{k: v for k, v in rows[0].items() if k != "args"}] + rows[1:]), "line 1 has no args"),
    (2, 1): (lambda rows: dump(rows[:-1] + [{k: v for k, v in rows[-1].items() if k != "hparams"}]),
             "line 3 has no hparams"),
}


def test_runs_that_cannot_be_used_are_listed_with_the_reason_and_left_out_of_every_mean(tmp_path, capsys):
    from domainbed_adapter import summary
    rng = random.Random(5)
    runs = {(env, trial): write_run(tmp_path, "PACS", "CLIPood", env, trial, rng) for env in range(4)
            for trial in range(3)}
    for key, (damage, _) in DAMAGE.items():
        rewrite(runs[key][0], damage)
    (runs[(3, 0)][0] / "results.jsonl").unlink()  # F-L11
    (runs[(3, 0)][0] / "results.jsonl").mkdir()
    report = summary.summarize(str(tmp_path), "final", "out")
    for key, (_, reason) in DAMAGE.items():
        assert any(line.startswith(f"{runs[key][0]}: ") and reason in line for line in report.missing), (key, reason)
    assert any(line.startswith(f"{runs[(3, 0)][0]}: results.jsonl unreadable") for line in report.missing)
    intact = {env: [final_model(runs[(env, t)][1], env, "out") for t in range(3) if (env, t) not in DAMAGE
                    and (env, t) != (3, 0)] for env in range(4)}
    for env, name in enumerate("ACPS"):
        cell = cells(report, "PACS", "CLIPood")[name]
        assert cell.runs == len(intact[env]) and cell.mean == (pytest.approx(mean(intact[env])) if intact[env]
                                                               else None), name
    assert cells(report, "PACS", "CLIPood")["Avg"].runs == 0  # every trial lost a test env
    assert summary.main(["--input_dir", str(tmp_path), "--selection", "final"]) == 1  # runs were left out
    assert "Traceback" not in capsys.readouterr().err


def test_a_run_with_other_settings_in_a_cell_is_reported(tmp_path):
    """F-L8: an extra run in a cell, with another hparams seed, steps, lr and lambda."""
    from domainbed_adapter import summary
    rng = random.Random(6)
    for env in range(4):
        write_run(tmp_path, "PACS", "CLIPood", env, 0, rng)
    stray, _ = write_run(tmp_path / "other", "PACS", "CLIPood", 0, 0, rng)
    stray = shutil.move(str(stray), str(tmp_path / "stray"))

    def other_experiment(rows):
        args = {**rows[0]["args"], "hparams_seed": 1, "steps": 5000}
        hparams = {**rows[0]["hparams"], "lr": 1.0, "mms_lambda": -3}
        return dump([{**row, "args": args, "hparams": hparams, "step": 4999 if row is rows[-1] else row["step"]}
                     for row in rows])
    rewrite(Path(stray), other_experiment)
    text = summary.summarize(str(tmp_path), "training_domain").text()
    note = next(line for line in text.splitlines() if line.startswith("mixed settings in PACS CLIPood test env 0 "))
    assert "args.steps (5000, 601)" in note and "lr (1.0, 5e-06)" in note and "stray" in note


def test_in_the_wild_results_that_cannot_be_used_are_listed_and_left_out(tmp_path):
    """F-M18 truncated, F-M19 an accuracy missing, F-L10 an accuracy null (NaN as strict JSON writes it)."""
    from domainbed_adapter import summary
    rng = random.Random(7)
    folders, results = {}, {}
    for trial in range(4):
        folders[trial], rows = write_run(tmp_path, "OfficeHome", "CLIPood", 0, trial, rng, open_class_ratio=0.5)
        results[trial] = write_open_results(folders[trial], rows, rng)
    path = {trial: folders[trial] / "open_class_results.json" for trial in range(4)}
    path[0].write_text(path[0].read_text()[:100])
    path[1].write_text(json.dumps({k: v for k, v in results[1].items() if k != "env0_all_new_acc"}))
    path[2].write_text(json.dumps({**results[2], "env0_all_base_acc": None}))
    report = summary.summarize(str(tmp_path))
    for trial, reason in ((0, "unreadable"), (1, "has no env0_all_new_acc"), (2, "env0_all_base_acc is None")):
        assert any(f"trial {trial} (in the wild): left out: {path[trial]}" in line and reason in line
                   for line in report.missing), (trial, report.missing)
    for column in ("Base", "New", "Total"):
        cell = cells(report, "Table 4", f"{column}: CLIPood")["A"]
        assert cell.runs == 1 and cell.expected == 4
    assert cells(report, "Table 4", "Base: CLIPood")["A"].mean == pytest.approx(100 * results[3]["env0_all_base_acc"])


def test_an_unreadable_results_file_is_listed_not_a_traceback(tmp_path):
    """F-M17: results.jsonl mode 000."""
    import sys
    from file_system import command
    rng = random.Random(8)
    folder, _ = write_run(tmp_path, "PACS", "CLIPood", 0, 0, rng)
    write_run(tmp_path, "PACS", "CLIPood", 0, 1, rng)
    (folder / "results.jsonl").chmod(0)
    result = command([sys.executable, "-m", "domainbed_adapter.summary", "--input_dir", tmp_path, "--out",
                      tmp_path / "tables" / "t"], permissions_hold=True)
    tmp_path.joinpath("tables").exists()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{folder}: results.jsonl unreadable (Permission denied)" in result.stdout


def test_terminal_rows_with_a_standard_deviation_keep_their_columns(tmp_path):
    """Issue 19: the "±" rows were out of their columns. In every column, each "±" stands at one position,
    whether or not its cell also counts its runs ("(2/3)")."""
    from domainbed_adapter.summary import summarize
    rng = random.Random(9)
    for algorithm in ("CLIPood", "CLIPERM"):
        for env in range(4):
            for trial in range(2 if (algorithm, env) == ("CLIPERM", 1) else 3):
                write_run(tmp_path, "PACS", algorithm, env, trial, rng)
    block = summarize(str(tmp_path), paper=True).text().split("\n\n")[0].splitlines()
    header, rows = block[1], [line for line in block[2:] if "±" in line]
    assert "(2/3)" in block[3]  # CLIPERM's row: test env 1 (C) and Avg lack a trial
    ends = [header.index(f" {column}") + 1 + len(column) for column in ("A", "C", "P", "S", "Avg")]
    for start, end in zip([len("CLIPERM")] + ends, ends):  # the span of each column (right-aligned)
        positions = {line.index("±", start) for line in rows if "±" in line[start:end]}
        assert len(positions) == 1, ("\n".join(block), start, end)

"""Dassl / CoOp summaries (Table 3 base-to-new, Table 2 ImageNet variants) from generated run folders
with the logs Dassl writes (CI: no Dassl needed)."""
import csv
import json
from pathlib import Path
from statistics import mean, stdev

import pytest

from dassl_trainers import base2new_summary, imagenet_summary
from dassl_trainers.base2new_summary import collect, summarize
from dassl_trainers.run_logs import run_accuracy

PAPER = Path(__file__).resolve().parents[1] / "clipood_plugin" / "paper_results.json"


def dassl_result(accuracy):
    """The lines Dassl's Classification evaluator prints."""
    return (f"=> result\n* total: 100\n* correct: {round(accuracy)}\n* accuracy: {accuracy:.1f}%\n"
            f"* error: {100 - accuracy:.1f}%\n")


def coop_arguments(eval_only):
    """The start of a log of CoOp's train.py (print_args)."""
    return f"***************\n** Arguments **\n***************\neval_only: {eval_only}\nseed: 1\n** Config **\n"


def write_training(folder, accuracy=None, val_accuracies=(), log_name="log.txt"):
    folder.mkdir(parents=True, exist_ok=True)
    text = coop_arguments(False) + "epoch [1/1] batch [500/500] loss 0.3\n" + "".join(map(dassl_result, val_accuracies))
    if accuracy is not None:
        text += "Finish training\nDeploy the last-epoch model\n" + dassl_result(accuracy) + "Elapsed: 0:01:00\n"
    (folder / log_name).write_text(text)


def write_evaluation(folder, accuracy):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log.txt").write_text(coop_arguments(True) + "Loading weights\n" + dassl_result(accuracy))


def write_run(root, dataset, seed, base=None, new=None, val_accuracies=()):
    write_training(root / "train_base" / dataset / f"seed{seed}", base, val_accuracies)
    if new is not None:
        write_evaluation(root / "test_new" / dataset / f"seed{seed}", new)


def h(base, new):  # written out here on purpose, independent of the package
    return 2 * base * new / (base + new)


def paper_rows(table, **match):
    rows = json.loads(PAPER.read_text())["tables"][table]["rows"]
    return [row for row in rows if all(row[k] == v for k, v in match.items())]


def cell_text(mean_value, std_value=None, digits=2):
    return f"{mean_value:.{digits}f}" + ("" if std_value is None else f" ± {std_value:.{digits}f}")


def row_cells(report, label):
    table = report.tables[0]
    row = next(row for row in table.rows if row.label == label)
    return {column: row.cells[column] for column in table.columns}


def test_base_is_the_test_after_training_not_a_validation_result(tmp_path):
    write_run(tmp_path, "dtd", 1, base=80.0, new=60.0, val_accuracies=(99.0,))
    assert run_accuracy(tmp_path / "train_base" / "dtd" / "seed1") == 80.0
    assert run_accuracy(tmp_path / "test_new" / "dtd" / "seed1") == 60.0
    write_run(tmp_path, "eurosat", 1, val_accuracies=(99.0,))  # still training: no Base yet
    assert run_accuracy(tmp_path / "train_base" / "eurosat" / "seed1") is None


def test_newest_log_of_a_resumed_run_counts(tmp_path):
    folder = tmp_path / "train_base" / "dtd" / "seed1"
    write_training(folder, val_accuracies=(50.0,))  # interrupted
    write_training(folder, 70.0, log_name="log.txt-2026-01-01-00-00-00")  # Dassl's name when resumed
    assert run_accuracy(folder) == 70.0


def test_the_argument_dict_of_dassl_trainers_train_marks_eval_only_too(tmp_path):
    arguments = "** Arguments **\n{'root': 'D', 'eval_only': True, 'seed': 1}\n"
    (tmp_path / "log.txt").write_text(arguments + dassl_result(55.5))
    assert run_accuracy(tmp_path) == 55.5


@pytest.fixture
def base2new_root(tmp_path):
    """oxford_pets 3 seeds; imagenet seed 3's new-class evaluation missing; eurosat seed 2 still training."""
    values = {"oxford_pets": [(80.0, 60.0), (82.0, 64.0), (84.0, 62.0)],
              "imagenet": [(70.0, 65.0), (72.0, 66.0), (71.0, None)],
              "eurosat": [(90.0, 50.0), (None, None), (91.0, 55.0)]}
    for dataset, seeds in values.items():
        for seed, (base, new) in enumerate(seeds, start=1):
            write_run(tmp_path, dataset, seed, base, new)
    return tmp_path, values


def test_table3_means_and_stds_over_seeds_and_the_average_within_seeds(base2new_root):
    root, values = base2new_root
    report = summarize(collect(root), paper=True)
    table = report.tables[0]
    labels = [row.label for row in table.rows if not row.published]
    assert labels == ["Average over 3 datasets", "ImageNet", "OxfordPets", "EuroSAT"]  # Table 3 order

    bases, news = [b for b, _ in values["oxford_pets"]], [n for _, n in values["oxford_pets"]]
    pets = row_cells(report, "OxfordPets")
    assert (pets["Base"].mean, pets["Base"].std) == (pytest.approx(mean(bases)), pytest.approx(stdev(bases)))
    assert (pets["New"].mean, pets["New"].std) == (pytest.approx(mean(news)), pytest.approx(stdev(news)))
    assert pets["H"].mean == pytest.approx(h(mean(bases), mean(news)))  # H of the seed means
    assert pets["H"].std == pytest.approx(stdev([h(b, n) for b, n in values["oxford_pets"]]))

    imagenet = row_cells(report, "ImageNet")  # seed 3 has no New: left out, and marked
    assert imagenet["Base"].mean == pytest.approx(71.0) and (imagenet["Base"].runs, imagenet["Base"].expected) == (2, 3)
    assert imagenet["New"].mean == pytest.approx(65.5) and imagenet["H"].text(2).endswith("(2/3)")

    # seeds finished on every dataset: only seed 1 (imagenet lacks 3, eurosat lacks 2)
    average = row_cells(report, "Average over 3 datasets")
    seed1_base, seed1_new = mean([80.0, 70.0, 90.0]), mean([60.0, 65.0, 50.0])
    assert average["Base"].mean == pytest.approx(seed1_base) and average["New"].mean == pytest.approx(seed1_new)
    assert average["H"].mean == pytest.approx(h(seed1_base, seed1_new)) and average["H"].runs == 1
    assert average["Base"].std is None  # one seed: no spread to report

    assert report.missing == ["imagenet seed3: new-class evaluation missing or unfinished in test_new",
                              "eurosat seed2: training unfinished"]
    text = report.text()
    assert "eurosat seed2: training unfinished" in text and cell_text(mean(bases), stdev(bases)) in text


def test_published_rows_of_table3_are_the_papers_average_and_imagenet_only(base2new_root):
    root, _ = base2new_root
    report = summarize(collect(root), paper=True)
    published = [row for row in report.tables[0].rows if row.published]
    expected = paper_rows("3")
    assert len(published) == len(expected) == 8  # 4 methods x (Average, ImageNet): nothing for other datasets
    for row, paper in zip(published, expected):
        assert row.label == f"{paper['dataset']}: {paper['method']} (paper)"
        assert {column: [cell.mean, cell.std] for column, cell in row.cells.items()} == paper["cells"]
    labels = [row.label for row in report.tables[0].rows]
    # each dataset's published rows follow its row
    assert labels.index("Average: CLIPood (paper)") < labels.index("ImageNet") < labels.index("ImageNet: CLIP (paper)")
    assert summarize(collect(root)).tables[0].rows[1].label == "ImageNet"  # without --paper: ours only


def test_command_line_prints_and_writes_markdown_and_csv(base2new_root, capsys):
    root, values = base2new_root
    # exit 1: the tables are written, and seeds are listed as missing (the fixture has two)
    assert base2new_summary.main([str(root), "--paper", "--out", str(root / "tables" / "t3")]) == 1
    out = capsys.readouterr().out
    bases = [b for b, _ in values["oxford_pets"]]
    assert "OxfordPets" in out and cell_text(mean(bases), stdev(bases)) in out and "Average: CoCoOp (paper)" in out
    markdown = (root / "tables" / "t3.md").read_text()
    assert "| OxfordPets | " + cell_text(mean(bases), stdev(bases)) in markdown
    assert "- eurosat seed2: training unfinished" in markdown
    with open(root / "tables" / "t3.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    pets_base = next(r for r in rows if r["row"] == "OxfordPets" and r["column"] == "Base")
    assert float(pets_base["mean"]) == pytest.approx(mean(bases))
    assert float(pets_base["std"]) == pytest.approx(stdev(bases))
    assert (pets_base["source"], pets_base["runs"], pets_base["expected"]) == ("ours", "3", "3")
    clipood_h = next(r for r in rows if r["row"] == "Average: CLIPood (paper)" and r["column"] == "H")
    assert (clipood_h["source"], float(clipood_h["mean"]), float(clipood_h["std"])) == ("paper", 78.9, 0.1)
    base2new_summary.main([str(root)])  # default: next to the runs
    assert (root / "base2new_summary.md").exists() and (root / "base2new_summary.csv").exists()


def test_no_runs_is_one_line_and_exit_code_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        base2new_summary.main([str(tmp_path / "elsewhere")])
    assert exit_info.value.code == 2 and "no training logs" in capsys.readouterr().err


def test_coop_script_layout_is_read_too(tmp_path):
    deep = "oxford_pets/shots_16/CLIPood/vit_b16_base2new"
    write_run(tmp_path, deep, 1, 90.0, 80.0)
    report = summarize(collect(tmp_path))
    assert row_cells(report, "OxfordPets")["H"].mean == pytest.approx(h(90.0, 80.0)) and not report.missing


@pytest.fixture
def table2_root(tmp_path):
    """CoCoOp's xd layout: ImageNet training, then eval-only runs per variant; seed 2's ImageNet-A is missing."""
    accuracies = {"imagenet": [71.0, 72.0], "imagenetv2": [64.0, 65.0], "imagenet_sketch": [49.0, 50.0],
                  "imagenet_a": [50.0, None], "imagenet_r": [77.0, 78.0]}
    for seed in (1, 2):
        write_training(tmp_path / "imagenet" / "CLIPood" / "vit_b16_16shots" / f"seed{seed}",
                       accuracies["imagenet"][seed - 1])
        for dataset in ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"):
            if accuracies[dataset][seed - 1] is not None:
                write_evaluation(tmp_path / "evaluation" / "CLIPood" / "vit_b16_16shots" / dataset / f"seed{seed}",
                                 accuracies[dataset][seed - 1])
    return tmp_path, accuracies


def test_table2_columns_ood_average_within_seeds_and_missing_seeds(table2_root, capsys):
    root, accuracies = table2_root
    report = imagenet_summary.summarize(imagenet_summary.collect(root), paper=True)
    cells = row_cells(report, "ours")
    assert (cells["ImageNet"].mean, cells["ImageNet"].std) == (pytest.approx(71.5), pytest.approx(stdev([71.0, 72.0])))
    assert cells["ImageNet-A"].mean == 50.0 and cells["ImageNet-A"].text(2) == "50.00 (1/2)"
    seed1_ood = mean([64.0, 49.0, 50.0, 77.0])  # seed 2 lacks ImageNet-A: no OOD avg for it
    ood = cells["OOD avg"]
    assert (ood.mean, ood.runs, ood.expected) == (pytest.approx(seed1_ood), 1, 2)
    assert report.missing == ["imagenet_a seed2: no run"]
    for row, paper in zip([row for row in report.tables[0].rows if row.published], paper_rows("2")):
        assert row.label == f"{paper['method']} (paper)"
        assert {column: [cell.mean, cell.std] for column, cell in row.cells.items()} == paper["cells"]

    assert imagenet_summary.main([str(root), "--paper"]) == 1  # a seed is missing
    assert "Fine-tune (paper)" in capsys.readouterr().out
    with open(root / "imagenet_summary.csv", newline="") as f:
        ours = {r["column"]: r for r in csv.DictReader(f) if r["source"] == "ours"}
    assert float(ours["ImageNet-R"]["mean"]) == pytest.approx(77.5) and ours["ImageNet-A"]["runs"] == "1"
    assert "## Missing or unfinished runs\n\n- imagenet_a seed2: no run" in (root / "imagenet_summary.md").read_text()


def test_table2_two_runs_for_one_seed_is_an_error_naming_the_fix(table2_root, capsys):
    root, _ = table2_root
    write_training(root / "other" / "imagenet" / "seed1", 60.0)
    with pytest.raises(SystemExit) as exit_info:
        imagenet_summary.main([str(root)])
    assert exit_info.value.code == 2 and "give the folder of one experiment" in capsys.readouterr().err


# ----------------------------------------------------------------------------- runs that cannot be used
def test_base2new_runs_whose_logs_cannot_be_used_are_listed_and_left_out(tmp_path, capsys):
    """F-M20 malformed accuracies, F-L7 an accuracy above 100%, F-L9 a training log in the test folder,
    F-L12 a log.txt that is a folder, F-L13 a log.txt directly in train_base/."""
    for seed in range(1, 7):
        write_run(tmp_path, "oxford_pets", seed, base=80.0 + seed, new=60.0 + seed)
    seed_folder = {seed: (tmp_path / "train_base" / "oxford_pets" / f"seed{seed}",
                          tmp_path / "test_new" / "oxford_pets" / f"seed{seed}") for seed in range(1, 7)}
    log = seed_folder[1][0] / "log.txt"
    log.write_text(log.read_text().replace("* accuracy: 81.0%", "* accuracy: 3.0.0%"))
    log = seed_folder[2][1] / "log.txt"
    log.write_text(log.read_text().replace("* accuracy: 62.0%", "* accuracy: .%"))
    log = seed_folder[3][0] / "log.txt"
    log.write_text(log.read_text().replace("* accuracy: 83.0%", "* accuracy: 3000.0%"))
    (seed_folder[4][1] / "log.txt").write_text((seed_folder[4][0] / "log.txt").read_text())  # a training log
    (seed_folder[5][0] / "log.txt").unlink()
    (seed_folder[5][0] / "log.txt").mkdir()
    (tmp_path / "train_base" / "log.txt").write_text("a stray log")
    report = summarize(collect(tmp_path))
    reasons = {1: "'3.0.0'%, not a number", 2: "'.'%, not a number", 3: "is 3000.0: an accuracy is in [0, 100]",
               4: "is the log of a training run", 5: "unreadable (Is a directory)"}
    for seed, reason in reasons.items():
        assert any(line.startswith(f"oxford_pets seed{seed}: left out: ") and reason in line
                   for line in report.missing), (seed, report.missing)
    assert any("train_base/log.txt is not in a <dataset>/<run> folder" in line for line in report.missing)
    cells = row_cells(report, "OxfordPets")
    assert (cells["Base"].mean, cells["Base"].runs) == (86.0, 1) and (cells["New"].mean, cells["New"].runs) == (66.0, 1)
    assert base2new_summary.main([str(tmp_path)]) == 1 and "Traceback" not in capsys.readouterr().err


def test_an_unreadable_log_is_listed_not_a_traceback(tmp_path):
    """F-M21: one log.txt mode 000."""
    import sys
    from file_system import command
    for seed in (1, 2):
        write_run(tmp_path, "oxford_pets", seed, base=80.0, new=60.0)
    log = tmp_path / "test_new" / "oxford_pets" / "seed2" / "log.txt"
    log.chmod(0)
    result = command([sys.executable, "-m", "dassl_trainers.base2new_summary", tmp_path], permissions_hold=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"oxford_pets seed2: left out: {log} unreadable (Permission denied)" in result.stdout


def test_a_variant_run_with_a_training_log_is_left_out_of_table2(table2_root):
    root, _ = table2_root
    variant = root / "evaluation" / "CLIPood" / "vit_b16_16shots" / "imagenet_r" / "seed2"
    write_training(variant, 99.0)  # a training log where the eval-only run belongs
    report = imagenet_summary.summarize(imagenet_summary.collect(root))
    assert any(line.startswith("imagenet_r seed2: left out:") for line in report.missing)
    assert row_cells(report, "ours")["ImageNet-R"].runs == 1

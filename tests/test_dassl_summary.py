"""base2new_summary: Base / New / H from Dassl-style logs (CI: no Dassl)."""
import pytest

from dassl_trainers.base2new_summary import collect, final_accuracy, format_table, main, summarize


def dassl_result(accuracy):
    """The lines Dassl's Classification evaluator prints."""
    return (f"=> result\n* total: 100\n* correct: {round(accuracy)}\n* accuracy: {accuracy:.1f}%\n"
            f"* error: {100 - accuracy:.1f}%\n")


def write_run(root, dataset, seed, base=None, new=None, val_accuracies=(), log_name="log.txt"):
    train = root / "train_base" / dataset / f"seed{seed}"
    train.mkdir(parents=True, exist_ok=True)
    text = "epoch [1/1] batch [500/500] loss 0.3\n" + "".join(dassl_result(a) for a in val_accuracies)
    if base is not None:
        text += "Finish training\nDeploy the last-epoch model\n" + dassl_result(base) + "Elapsed: 0:01:00\n"
    (train / log_name).write_text(text)
    if new is not None:
        test = root / "test_new" / dataset / f"seed{seed}"
        test.mkdir(parents=True, exist_ok=True)
        (test / "log.txt").write_text("Loaded model\n" + dassl_result(new))


def h(base, new):  # written out here on purpose, independent of the package
    return 2 * base * new / (base + new)


def test_base_is_the_test_after_training_not_a_validation_result(tmp_path):
    write_run(tmp_path, "dtd", 1, base=80.0, new=60.0, val_accuracies=(99.0,))
    assert final_accuracy(tmp_path / "train_base" / "dtd" / "seed1", "Finish training") == 80.0
    write_run(tmp_path, "eurosat", 1, val_accuracies=(99.0,))  # still training: no Base yet
    assert final_accuracy(tmp_path / "train_base" / "eurosat" / "seed1", "Finish training") is None


def test_newest_log_of_a_resumed_run_counts(tmp_path):
    write_run(tmp_path, "dtd", 1, val_accuracies=(50.0,))  # interrupted
    write_run(tmp_path, "dtd", 1, base=70.0, log_name="log.txt-2026-01-01-00-00-00")  # Dassl's name when resumed
    assert final_accuracy(tmp_path / "train_base" / "dtd" / "seed1", "Finish training") == 70.0


def test_table_means_over_seeds_and_harmonic_means(tmp_path):
    for seed, (base, new) in enumerate([(80.0, 60.0), (82.0, 64.0), (84.0, 62.0)], start=1):
        write_run(tmp_path, "oxford_pets", seed, base, new)
    write_run(tmp_path, "imagenet", 1, 70.0, 65.0)
    write_run(tmp_path, "imagenet", 2, 72.0)  # new-class evaluation missing: left out of the means
    rows = summarize(collect(tmp_path))
    names = [row[0] for row in rows]
    assert names == ["Average (2 datasets)", "ImageNet", "OxfordPets"]  # Table 3 order
    _, base, new, hm, complete, total = rows[2]
    assert (base, new, complete, total) == (pytest.approx(82.0), pytest.approx(62.0), 3, 3)
    assert hm == pytest.approx(h(82.0, 62.0))  # H of the seed means
    assert rows[1][1:] == (pytest.approx(70.0), pytest.approx(65.0), pytest.approx(h(70.0, 65.0)), 1, 2)
    average = rows[0]
    assert average[1] == pytest.approx((82.0 + 70.0) / 2) and average[2] == pytest.approx((62.0 + 65.0) / 2)
    assert average[3] == pytest.approx(h(76.0, 63.5))  # H of the averages, as in CoCoOp / CLIPood
    table = format_table(rows)
    assert "OxfordPets" in table and f"{h(82.0, 62.0):6.2f}" in table and "1/2" in table


def test_command_line_prints_the_table(tmp_path, capsys):
    write_run(tmp_path, "eurosat", 1, 90.0, 60.0)
    main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "EuroSAT" in out and f"{h(90.0, 60.0):.2f}" in out
    with pytest.raises(SystemExit, match="no training logs"):
        main([str(tmp_path / "elsewhere")])


def test_coop_script_layout_is_read_too(tmp_path):
    deep = "oxford_pets/shots_16/CLIPood/vit_b16_base2new"
    write_run(tmp_path, deep, 1, 90.0, 80.0)
    rows = summarize(collect(tmp_path))
    assert rows[1][0] == "OxfordPets" and rows[1][3] == pytest.approx(h(90.0, 80.0))

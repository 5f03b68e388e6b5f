"""`clipood train` / `clipood demo` as a user runs them: results, exact resume, clear errors."""
import json
import shutil

import pytest
import torch
from PIL import Image

from clipood_plugin.cli import main
from clipood_plugin.synthetic import make_demo_dataset

FAST = ["--model", "clipood-tiny", "--pretrained", "none", "--lr", "1e-3", "--batch-size", "4",
        "--eval-every", "2", "--checkpoint-every", "2", "--workers", "0"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("shapes"), images_per_class=6)


def run(*argv):
    return main(list(map(str, argv)))


def test_train_writes_results_plot_and_model(data_dir, tmp_path, capsys):
    assert run("train", "--data-dir", data_dir, "--test-domains", "sketch", "--steps", 4, "--output-dir", tmp_path, *FAST) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["train_domains"] == ["painting", "photo"] and results["test_domains"] == ["sketch"]
    assert set(results["accuracy"]) == {"zero_shot", "final", "bma"}
    assert [h["step"] for h in results["history"]] == [0, 2, 4]
    assert len(results["bma_weights"]) == 5  # a_0 (pretrained) .. a_4
    assert (tmp_path / "results.png").stat().st_size > 0
    assert not (tmp_path / "checkpoint.pt").exists()
    state = torch.load(tmp_path / "model.pt", weights_only=False)
    assert state["class_names"] == ["circle", "square", "star", "triangle"] and state["step"] == 4
    assert "BMA" in capsys.readouterr().out


@pytest.mark.parametrize("decode", ["cpu", "device"])
def test_interrupted_and_resumed_run_ends_where_an_uninterrupted_one_does(data_dir, tmp_path, decode):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    common = ["train", "--data-dir", data_dir, "--test-domains", "sketch", "--steps", 6, "--decode", decode, *FAST]
    assert run(*common, "--output-dir", whole) == 0
    assert run(*common, "--output-dir", parts, "--stop-after", 3) == 0
    assert (parts / "checkpoint.pt").exists() and not (parts / "results.json").exists()
    assert run(*common, "--output-dir", parts) == 2  # refuses to overwrite the unfinished run
    assert run(*common, "--output-dir", parts, "--resume") == 0
    a, b = (json.loads((d / "results.json").read_text()) for d in (whole, parts))
    for key in ("accuracy", "history", "losses", "bma_weights"):
        assert a[key] == b[key], key
    ma, mb = (torch.load(d / "model.pt", weights_only=False)["inference_encoder"] for d in (whole, parts))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_resume_refuses_changed_settings(data_dir, tmp_path):
    common = ["train", "--data-dir", data_dir, "--test-domains", "sketch", "--steps", 4, "--output-dir", tmp_path, *FAST]
    assert run(*common, "--stop-after", 2) == 0
    assert run(*common, "--resume", "--mms-lambda", "0.1") == 2


@pytest.mark.parametrize("problem, message", [
    ("missing_dir", "does not exist"),
    ("unknown_domain", "unknown test domain"),
    ("missing_class", "lacks ['star']"),
])
def test_bad_input_exits_2_with_a_message(data_dir, tmp_path, capsys, problem, message):
    root, domain = data_dir, "sketch"
    if problem == "missing_dir":
        root = tmp_path / "nowhere"
    elif problem == "unknown_domain":
        domain = "cartoon"
    else:
        root = tmp_path / "copy"
        shutil.copytree(data_dir, root)
        shutil.rmtree(root / "photo" / "star")
    assert run("train", "--data-dir", root, "--test-domains", domain, "--steps", 2, "--output-dir", tmp_path / "out", *FAST) == 2
    assert message in capsys.readouterr().err


def test_unreadable_images_are_skipped_and_counted(data_dir, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(data_dir, root)
    (root / "photo" / "circle" / "broken.png").write_bytes(b"not a png")
    Image.new("RGB", (8, 8)).save(root / "photo" / "circle" / "fine.png")
    out = tmp_path / "out"
    assert run("train", "--data-dir", root, "--test-domains", "sketch", "--steps", 2, "--output-dir", out, *FAST) == 0
    skipped = json.loads((out / "results.json").read_text())["skipped_images"]
    assert [s["path"].endswith("broken.png") for s in skipped] == [True]


def test_demo_runs_on_the_tiny_model(tmp_path, capsys):
    assert run("demo", "--output-dir", tmp_path, "--steps", 4, "--eval-every", 2, "--workers", 0) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["model"] == "clipood-tiny" and results["config"]["steps"] == 4
    assert results["test_domains"] == ["painting"]
    assert "clipood-tiny" in capsys.readouterr().out

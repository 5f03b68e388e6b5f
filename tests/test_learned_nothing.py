"""A run that learned nothing never ends as a success (issue #27): every step skipped from the first, or more
than half of a run's steps by its last one, is LearnedNothingError in the library and a failure (exit 1, no
finished model) in `clipood train`, DomainBed's train.py and Dassl's train.py."""
import json
import os
import subprocess
import sys

import pytest
from test_dassl_integration import DASSL_ROOT, ENV, TRAINER_CONFIGS, data_root, tiny_opts  # noqa: F401 (a fixture)
from test_cli import data_dir, run, train_argv  # noqa: F401 (a fixture)
from test_domainbed_integration import train

from clipood_plugin import LearnedNothingError, TrainingDivergedError
from clipood_plugin.results_table import UnusableRun
from clipood_plugin.run_report import read_results
from clipood_plugin.training_step import MAX_SKIPPED_SHARE

T = 6  # conftest's make_learner: total_steps=6


def with_nan(images):
    images = images.clone()
    images[:, 0, 0, 0] = float("nan")
    return images


def run_steps(learner, batches, skipped_steps):
    """Update on each batch, with a NaN in the images of the (1-based) steps in ``skipped_steps``."""
    for step, (images, labels) in enumerate(batches, start=1):
        learner.update(with_nan(images) if step in skipped_steps else images, labels)


def test_a_run_whose_every_step_is_skipped_fails_at_its_last_step_naming_the_input(make_learner, batches):
    learner = make_learner()
    with pytest.raises(LearnedNothingError, match=r"each of its 6 step\(s\).*first step.*input normalization"):
        run_steps(learner, batches, skipped_steps=range(1, T + 1))
    assert learner.step == T  # the run got to its end, where it is judged


def test_every_step_skipped_up_to_the_consecutive_limit_is_learned_nothing_not_divergence(make_learner, batches):
    learner = make_learner(max_consecutive_skips=3)
    with pytest.raises(LearnedNothingError, match=r"each of its 3 step\(s\)"):
        run_steps(learner, batches, skipped_steps=range(1, T + 1))
    assert learner.step == 3


@pytest.mark.parametrize("skipped_steps", [{2, 3, 5, 6}, {1, 3, 4, 6}])  # 4 of 6, never 20 in a row
def test_more_than_half_of_the_steps_skipped_fails_at_the_last_step(make_learner, batches, skipped_steps):
    assert len(skipped_steps) > MAX_SKIPPED_SHARE * T
    learner = make_learner()
    with pytest.raises(LearnedNothingError, match=r"4 of its 6 steps \(more than 50%\)"):
        run_steps(learner, batches, skipped_steps)
    assert learner.step == T


def test_half_of_the_steps_skipped_is_still_a_run(make_learner, batches):
    learner = make_learner()
    run_steps(learner, batches, skipped_steps={2, 4, 6})  # 3 of 6: not more than half
    assert learner.step == T and learner.training_step.skipped == 3


def test_learned_nothing_is_a_divergence_for_callers_that_catch_that(make_learner, batches):
    with pytest.raises(TrainingDivergedError):
        run_steps(make_learner(), batches, skipped_steps=range(1, T + 1))


# ----------------------------------------------------------------------------- the front ends
DIVERGING_LR = 1e30  # step 1 is finite; from step 2 the weights overflow every forward pass, and the steps skip


def test_clipood_train_exits_1_and_keeps_its_results_marked_failed(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(*train_argv(data_dir, out, "--steps", 6, "--lr", DIVERGING_LR, "--eval-every", 3)) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("clipood train: error: the run learned too little to report: 5 of its 6 steps"), err
    assert "input normalization" in err and "--lr" in err
    results = json.loads((out / "results.json").read_text())
    assert results["failed"] in err and len(results["losses"]) == 5 and "accuracy" not in results
    assert not (out / "model.pt").exists()
    with pytest.raises(UnusableRun, match="the run failed"):  # what the summaries read of it
        read_results(out / "results.json")


@pytest.mark.needs("domainbed", "wilds")
def test_domainbed_train_py_fails_without_done_or_model_pkl(tmp_path):
    out = tmp_path / "out"
    result = train(out, "--algorithm", "CLIPood", "--steps", "6", "--hparams", f'{{"lr": {DIVERGING_LR}}}',
                   check=False)
    assert result.returncode == 1
    output = result.stdout + result.stderr  # train.py tees stderr into stdout
    assert "LearnedNothingError: the run learned too little to report: 5 of its 6 steps" in output, output[-2000:]
    assert not {"done", "model.pkl"} & set(os.listdir(out))


@pytest.mark.needs("dassl", "wilds", "dassl_checkout")
def test_dassl_train_py_fails_without_finishing(data_root, tmp_path):
    done = subprocess.run(
        [sys.executable, "tools/train.py", "--root", str(data_root), "--seed", "1", "--trainer", "CLIPood",
         "--dataset-config-file", "configs/datasets/dg/pacs.yaml", "--config-file", str(TRAINER_CONFIGS / "vit_b16_dg.yaml"),
         "--source-domains", "art_painting", "cartoon", "photo", "--target-domains", "sketch",
         "--output-dir", str(tmp_path), *tiny_opts(data_root, "DATALOADER.TRAIN_X.BATCH_SIZE", "6", "OPTIM.MAX_EPOCH", "2",
                                                   "OPTIM.LR", str(DIVERGING_LR))],
        cwd=DASSL_ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert "LearnedNothingError: the run learned too little to report: 5 of its 6 steps" in done.stderr, \
        done.stderr[-2000:]
    assert "Finish training" not in done.stdout

"""SWAD against its rule written out (Cha et al., NeurIPS 2021, Sec. 3.4), on trajectories with known loss curves.

The rule, over the validation losses L_0..L_{K-1} recorded every ``every`` steps (and at the last step):
t_s is the first k with L_k = min(L_k..L_{k+N_s-1}); threshold = (1 + r) mean(L_{t_s}..L_{t_s+N_s-1}); the
window goes on through every k with min(L_k..L_{k+N_e-1}) <= threshold and ends before the first k without;
SWAD's weights are the mean of the weights after every step of the window's segments. A run that never
converges predicts with its last segment (LossValley.get_final_model in the authors' domainbed/swad.py).
"""
import io
import json

import pytest
import torch
from torch import nn

from clipood_plugin.averaging import SWAD
from clipood_plugin.settings import SettingError

from test_averaging import trajectory
from test_dassl_integration import data_root  # noqa: F401 (the fixture: Dassl's PACS layout with a val split)


def swad_rule(losses, n_s, n_e, r):
    """(t_s, t_e) as segment indices, or None when the losses never converge."""
    for start in range(len(losses) - n_s + 1):
        if losses[start] == min(losses[start:start + n_s]):
            break
    else:
        return None
    threshold = (1 + r) * sum(losses[start:start + n_s]) / n_s
    end = start
    for k in range(start, len(losses)):
        if min(losses[k:k + n_e]) > threshold:
            break
        end = k
    return start, end


def window_steps(losses, total_steps, every, n_s=3, n_e=6, r=0.3):
    """(first, last) step of the window the rule finds in the losses recorded every ``every`` steps and at
    the last, or None when they never converge."""
    ends = [t for t in range(1, total_steps + 1) if t % every == 0 or t == total_steps]
    window = swad_rule(losses, n_s, n_e, r)
    if window is None:
        return None
    return (ends[window[0] - 1] + 1 if window[0] else 1), ends[window[1]]


def expected_weights(states, losses, total_steps, every, n_s=3, n_e=6, r=0.3):
    """The mean of states[t] (the weights after step t) over the steps of the window (of the last segment for
    losses that never converge)."""
    first, last = window_steps(losses, total_steps, every, n_s, n_e, r) or (
        total_steps - (total_steps - 1) % every, total_steps)
    steps = range(first, last + 1)
    return {key: sum(states[t][key].double() for t in steps) / len(steps) for key in states[0]}, steps


def run_swad(total_steps, every, losses, swad=None, **settings):
    _, states, models = trajectory(total_steps)
    start = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    start.load_state_dict(states[0])
    swad = swad or SWAD(start, total_steps, every, **settings)
    recorded = iter(losses)
    for model in models[swad.step:]:
        swad.update(model)
        if swad.validation_due:
            swad.record_validation_loss(next(recorded))
    return swad, states


# loss curves, one value per segment: (name, losses, (t_s, t_e) the rule gives, by hand)
CURVES = [
    # falls, flattens at 1.0 (t_s = 3, threshold 1.3 * mean(1.0, 1.05, 1.1)), then climbs over 1.365 for 6 records
    ("valley", [3.0, 2.0, 1.5, 1.0, 1.05, 1.1, 1.2, 1.3, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1, 2.2, 2.3], (3, 7)),
    # converges at 0.9 and stays low to the end: the look-ahead is cut at the last record
    ("stays low", [2.0, 0.9, 1.0, 0.95, 1.0, 0.98, 1.01, 0.99], (1, 7)),
    # a plateau of equal losses: the first minimum starts the window
    ("plateau", [1.0, 1.0, 1.0, 1.0, 1.0], (0, 4)),
    # falls all the way: never converges
    ("falls", [5.0, 4.0, 3.0, 2.0, 1.0], None),
]


@pytest.mark.parametrize("name,losses,window", CURVES, ids=[c[0] for c in CURVES])
def test_swad_averages_the_window_its_rule_finds(name, losses, window):
    every = 3
    total_steps = every * len(losses) - 1  # the last segment is a step shorter
    assert swad_rule(losses, 3, 6, 0.3) == window  # the hand-made curves are what their names say
    swad, states = run_swad(total_steps, every, losses)
    expected, steps = expected_weights(states, losses, total_steps, every)
    for key, value in swad.module.state_dict().items():
        assert torch.allclose(value.double(), expected[key], atol=1e-5), key
    if window is None:
        assert swad.window is None and not swad.converged
    else:
        assert swad.window == (steps[0], steps[-1])
        assert swad.dead == (window[1] < len(losses) - 1)


def test_other_patience_and_tolerance():
    losses = [2.0, 1.5, 1.6, 1.2, 1.3, 1.25, 1.4, 2.5, 2.6, 1.1, 3.0, 3.1]
    for n_s, n_e, r in [(2, 2, 0.1), (4, 3, 0.5), (1, 1, 0.0)]:
        swad, states = run_swad(4 * len(losses), 4, losses, n_converge=n_s, n_tolerance=n_e, tolerance_ratio=r)
        expected, _ = expected_weights(states, losses, 4 * len(losses), 4, n_s, n_e, r)
        for key, value in swad.module.state_dict().items():
            assert torch.allclose(value.double(), expected[key], atol=1e-5), (n_s, n_e, r, key)


def test_resume_mid_run_is_bit_identical():
    losses = CURVES[0][1]
    total_steps = 2 * len(losses)
    whole, _ = run_swad(total_steps, 2, losses)
    _, states, models = trajectory(total_steps)
    start = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    start.load_state_dict(states[0])
    first = SWAD(start, total_steps, 2)
    recorded = iter(losses)
    for model in models[:13]:  # stops mid-segment, after t_s was found
        first.update(model)
        if first.validation_due:
            first.record_validation_loss(next(recorded))
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = SWAD(start, total_steps, 2)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for model in models[13:]:
        resumed.update(model)
        if resumed.validation_due:
            resumed.record_validation_loss(next(recorded))
    for key, value in whole.module.state_dict().items():
        assert torch.equal(value, resumed.module.state_dict()[key]), key
    assert (whole.window, whole.dead) == (resumed.window, resumed.dead)


def test_a_missing_validation_is_an_error_not_a_silent_merge():
    _, states, models = trajectory(4)
    swad = SWAD(nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3)), 4, every=2)
    swad.update(models[0])
    swad.update(models[1])
    with pytest.raises(RuntimeError, match="validation loss"):
        swad.update(models[2])
    with pytest.raises(ValueError, match="not finite"):
        swad.record_validation_loss(float("nan"))


def test_learner_validates_with_the_cross_entropy_of_the_current_weights():
    from clipood_plugin import CLIPoodLearner

    torch.manual_seed(0)
    learner = CLIPoodLearner(model_name="clipood-tiny", pretrained=None, class_names=["a", "b", "c"],
                             total_steps=4, lr=1e-3, averaging="swad", swad_every=2, compile="off", device="cpu")
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    held_out = [[(images[:2], labels[:2]), (images[2:3], labels[2:3])], [(images[3:], labels[3:])]]
    for step in range(4):
        learner.update(images, labels)
        assert learner.validation_due == (step % 2 == 1)
        if learner.validation_due:
            logits = [learner.predict(images[:3], averaged=False), learner.predict(images[3:], averaged=False)]
            # the authors' evaluator: F.cross_entropy per environment, their mean over training environments
            expected = sum(nn.functional.cross_entropy(lg, lb) for lg, lb in zip(logits, (labels[:3], labels[3:]))) / 2
            assert learner.validate(held_out) == pytest.approx(expected.item(), rel=1e-5)
    assert learner.averager.losses and learner.averager.step == 4
    with pytest.raises(SettingError, match="swad_every"):
        CLIPoodLearner(model_name="clipood-tiny", pretrained=None, class_names=["a", "b"], total_steps=4,
                       averaging="swad", swad_every=0, device="cpu")


def test_clipood_train_averages_the_window_of_its_holdout_losses_and_resumes_the_same(tmp_path, capsys):
    from clipood_plugin.synthetic import make_demo_dataset
    from test_cli import assert_same_run, run, train_argv

    data_dir = make_demo_dataset(tmp_path / "shapes", images_per_class=6)
    swad = ["--steps", 9, "--averaging", "swad", "--swad-every", 2, "--swad-n-converge", 2, "--swad-n-tolerance", 2]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert run(*train_argv(data_dir, whole, *swad)) == 0
    assert run(*train_argv(data_dir, parts, *swad, "--stop-after", 5)) == 0
    assert run(*train_argv(data_dir, parts, *swad, "--resume")) == 0
    assert_same_run(whole, parts)
    results = json.loads((whole / "results.json").read_text())["swad"]
    steps, losses = zip(*results["holdout_losses"])
    assert steps == (2, 4, 6, 8, 9)
    window = window_steps(list(losses), 9, 2, 2, 2)
    assert results["window"] == (window and list(window))
    assert "holdout loss" in capsys.readouterr().out  # the progress lines

    assert run(*train_argv(data_dir, tmp_path / "no-holdout", *swad, "--holdout-fraction", 0)) == 2
    assert "--averaging swad finds its window from the loss on held-out images" in capsys.readouterr().err


def assert_described(line, window):
    """A front end's last SWAD line names the window (first-last step) or says it never converged."""
    assert ("has not converged" if window is None else f"after steps {window[0]}-{window[1]}") in line


@pytest.mark.needs("domainbed", "wilds")
def test_domainbed_train_py_validates_swad_on_the_training_environments_out_splits(tmp_path):
    import re

    from test_domainbed_integration import train

    hparams = json.dumps({"averaging": "swad", "swad_every": 2, "swad_n_converge": 2, "swad_n_tolerance": 2})
    out = train(tmp_path / "run", "--algorithm", "CLIPood", "--steps", "7", "--test_envs", "0",
                "--hparams", hparams).stdout
    records = re.findall(r"CLIPood: step (\d+) holdout loss ([^;]+); (.*)", out)  # the exact losses SWAD decided on (repr)
    assert [int(step) for step, _, _ in records] == [2, 4, 6, 7]
    assert_described(records[-1][2], window_steps([float(loss) for _, loss, _ in records], 7, 2, 2, 2))


def test_the_domainbed_algorithm_outside_train_py_refuses_swad_saying_why():
    from test_domainbed_contract import build

    with pytest.raises(ValueError, match="only a run of domainbed.scripts.train has"):
        build(averaging="swad")


@pytest.mark.needs("dassl", "wilds", "dassl_checkout")
def test_dassl_validates_swad_on_the_datasets_val_split(data_root, tmp_path):
    import re

    from test_dassl_integration import dassl_train

    log = dassl_train(data_root, tmp_path, "vit_b16_dg.yaml", "OPTIM.MAX_EPOCH", "2", "TRAINER.CLIPOOD.AVERAGING",
                      "swad", "TRAINER.CLIPOOD.SWAD_EVERY", "2", "TRAINER.CLIPOOD.SWAD_N_CONVERGE", "2",
                      "TRAINER.CLIPOOD.SWAD_N_TOLERANCE", "2")
    records = re.findall(r"CLIPood: step (\d+) validation loss ([^;]+); (.*)", log)
    assert [int(step) for step, _, _ in records] == [2, 4, 6]
    assert_described(records[-1][2], window_steps([float(loss) for _, loss, _ in records], 6, 2, 2, 2))

"""WiSE-FT (clipood_plugin.wise_ft): alpha 0 predicts as the zero-shot model, alpha 1 as the fine-tuned one,
bit for bit, and a midpoint as the interpolation (1 - alpha) theta_0 + alpha theta_ft written out here.
`clipood evaluate --wise-ft` is tested in tests/test_evaluate.py."""
import pytest
import torch

from clipood_plugin import CLIPoodLearner, pretrained_weights, wise_ft_accuracy
from clipood_plugin.settings import DataError, SettingError
from clipood_plugin.wise_ft import interpolation
from conftest import CLASSES

MIDPOINT = 0.3


def build(weights, head, **kwargs):
    torch.manual_seed(0)
    return CLIPoodLearner(model_name="clipood-tiny", pretrained=weights and str(weights), class_names=CLASSES,
                          head=head, margin_kind="adaptive" if head == "text" else "none", compile="off",
                          device="cpu", **kwargs)


def accuracy(logits, labels):
    return 100.0 * (logits.argmax(1) == labels).sum().item() / len(labels)


@pytest.mark.parametrize("head, averaging", [("text", "bma"), ("linear", "none")])
def test_the_ends_are_zero_shot_and_fine_tuned_and_a_midpoint_the_interpolation(tiny_weights, batches, head,
                                                                              averaging):
    learner = build(tiny_weights, head, total_steps=len(batches) - 1, lr=1e-2, averaging=averaging)
    for images, labels in batches[:-1]:  # a large lr: the weights move far from theta_0
        learner.update(images, labels)
    images, labels = batches[-1]
    fine_tuned = learner.predict(images)
    theta_ft = {key: value.clone() for key, value in learner.inference_encoder.state_dict().items()}
    zero_shot = build(tiny_weights, head, zero_shot=True)
    theta_0 = {key: value.clone() for key, value in zero_shot.inference_encoder.state_dict().items()}
    assert pretrained_weights(learner).keys() == theta_0.keys()
    assert all(torch.equal(value, theta_0[key]) for key, value in pretrained_weights(learner).items())

    mixed = {key: (1 - MIDPOINT) * theta_0[key] + MIDPOINT * theta_ft[key] for key in theta_0}  # all floats here
    by_hand = build(tiny_weights, head, zero_shot=True)
    by_hand.inference_encoder.load_state_dict(mixed)
    expected = {0: zero_shot.predict(images), MIDPOINT: by_hand.predict(images), 1: fine_tuned}
    assert (expected[MIDPOINT] - expected[0]).abs().max() > 0.1 and (expected[MIDPOINT] - fine_tuned).abs().max() > 0.1

    with interpolation(learner, pretrained_weights(learner)) as interpolate:
        for alpha in (0, 1, MIDPOINT):
            interpolate(alpha)
            logits = learner.predict(images)
            if alpha == MIDPOINT:  # lerp and the sum written out round differently
                torch.testing.assert_close(logits, expected[alpha], rtol=1e-5, atol=1e-5)
            else:
                assert torch.equal(logits, expected[alpha]), alpha
    assert torch.equal(learner.predict(images), fine_tuned)  # theta_ft is back
    assert all(torch.equal(value, theta_ft[key]) for key, value in learner.inference_encoder.state_dict().items())

    curve = wise_ft_accuracy(learner, theta_0, [0, MIDPOINT, 1], {"batch": [(images, labels, [])]})
    assert curve == {alpha: {"batch": accuracy(logits, labels)} for alpha, logits in expected.items()}


def test_a_random_init_has_no_theta_0(make_learner):
    with pytest.raises(DataError, match="random init"):
        pretrained_weights(make_learner())


@pytest.mark.parametrize("alphas", [[], [1.5], [-0.25], [float("nan")], [0.5, 0.5], "0.5", [True]])
def test_alphas_are_distinct_numbers_in_0_1(tiny_weights, alphas):
    learner = build(tiny_weights, "text", zero_shot=True)
    with pytest.raises(SettingError, match=r"wise_ft_alphas must be a non-empty list of distinct finite numbers in "
                                           r"\[0, 1\]"):
        wise_ft_accuracy(learner, learner.inference_encoder.state_dict(), alphas, {})


def test_clipood_train_wise_ft_curve_ends_at_zero_shot_and_the_model_and_resumes_the_same(tmp_path, capsys):
    """`clipood train --wise-ft`: theta_0 is the model as built (here a seeded random init, rebuilt the same on
    --resume); alpha 0 scores as the run's zero-shot evaluation, alpha 1 as its BMA model; the best alpha is
    the one with the highest mean holdout accuracy."""
    import json

    from clipood_plugin.synthetic import make_demo_dataset
    from test_cli import run, train_argv

    data_dir = make_demo_dataset(tmp_path / "shapes", images_per_class=6)
    argv = ["--steps", 6, "--wise-ft", "0,0.5,1"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert run(*train_argv(data_dir, whole, *argv)) == 0
    assert run(*train_argv(data_dir, parts, *argv, "--stop-after", 3)) == 0
    assert run(*train_argv(data_dir, parts, *argv, "--resume")) == 0
    results, resumed = (json.loads((d / "results.json").read_text()) for d in (whole, parts))
    assert results["wise_ft"] == resumed["wise_ft"]
    curve = {entry["alpha"]: entry for entry in results["wise_ft"]["curve"]}
    assert curve[0.0]["accuracy"] == results["accuracy"]["zero_shot"]
    assert curve[1.0]["accuracy"] == results["accuracy"]["bma"]
    holdout = [split for split in results["accuracy"]["bma"] if split.endswith("(holdout)")]
    means = {alpha: sum(entry["accuracy"][s] for s in holdout) / len(holdout) for alpha, entry in curve.items()}
    assert results["wise_ft"]["best_alpha"] == max(means, key=means.get)
    assert "WiSE-FT alpha  holdout mean  test mean" in capsys.readouterr().out

    assert run(*train_argv(data_dir, tmp_path / "bad", *argv[:2], "--wise-ft", "0,2")) == 2
    assert "--wise-ft must be a non-empty list of distinct finite numbers in [0, 1]" in capsys.readouterr().err

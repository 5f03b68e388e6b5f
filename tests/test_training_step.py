"""The training step's numerics: the non-finite guard (issue #10). The authors' fp16 numerics: test_authors_fp16.py."""
import copy
import io
import math

import pytest
import torch

from clipood_plugin import TrainingDivergedError
from clipood_plugin.averaging import beta_pdf

T = 6  # conftest's make_learner: total_steps=6, lr=1e-3, beta 0.5


def roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def snapshot(module):
    return {key: value.clone() for key, value in module.state_dict().items()}


def assert_equal_states(got, expected):
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def with_nan(images):
    images = images.clone()
    images[0, 0, 0, 0] = float("nan")
    return images


def bma_coefficient(t, total=T, beta=0.5):
    """a_t / A_t of Eq. 7, the weight of theta_t when it is folded into the average."""
    weights = [beta_pdf((k + 0.5) / (total + 1), beta) for k in range(t + 1)]
    return weights[-1] / sum(weights)


def test_a_nan_batch_changes_no_weight_and_the_run_goes_on(make_learner, batches):
    learner = make_learner()
    learner.update(*batches[0])
    live, average = snapshot(learner.image_encoder), snapshot(learner.inference_encoder)

    stats = learner.update(with_nan(batches[1][0]), batches[1][1])
    assert_equal_states(snapshot(learner.image_encoder), live)
    assert math.isnan(stats["loss"]) and stats["skipped"] == 1 and learner.step == 2
    # the average folds in the unchanged weights as theta_2 (Eq. 7 with theta_2 = theta_1)
    c = bma_coefficient(2)
    for key, value in learner.inference_encoder.state_dict().items():
        expected = average[key].double() + c * (live[key].double() - average[key].double())
        assert torch.allclose(value.double(), expected, atol=1e-6), key
    assert torch.isfinite(learner.predict(batches[0][0])).all()

    stats = learner.update(*batches[2])  # the schedule went on: step 3 trains at the cosine's value for t=2
    assert stats["lr"] == pytest.approx(1e-3 * (1 + math.cos(math.pi * 2 / T)) / 2)
    assert math.isfinite(stats["loss"]) and stats["skipped"] == 1
    assert not torch.equal(learner.image_encoder.state_dict()["proj"], live["proj"])
    for images, labels in batches[3:]:
        learner.update(images, labels)
    assert learner.step == learner.averager.step == T  # the horizon is the one planned


def test_an_inf_gradient_with_a_finite_loss_is_skipped(make_learner, batches):
    learner = make_learner()
    learner.update(*batches[0])
    live, optimizer = snapshot(learner.image_encoder), copy.deepcopy(learner.optimizer.state_dict())
    hook = learner.image_encoder.proj.register_hook(lambda grad: torch.full_like(grad, float("inf")))
    stats = learner.update(*batches[1])
    hook.remove()
    assert_equal_states(snapshot(learner.image_encoder), live)
    assert math.isfinite(stats["loss"]) and stats["skipped"] == 1
    for index, state in optimizer["state"].items():  # Adam's moments and step count untouched too
        for key, value in state.items():
            assert torch.equal(learner.optimizer.state_dict()["state"][index][key], value), (index, key)
    assert learner.update(*batches[2])["skipped"] == 1


def test_consecutive_skips_end_the_run_and_a_finite_step_resets_the_count(make_learner, batches):
    learner = make_learner(max_consecutive_skips=2)
    nan_batch = (with_nan(batches[0][0]), batches[0][1])
    learner.update(*nan_batch)
    learner.update(*batches[1])
    learner.update(*nan_batch)
    with pytest.raises(TrainingDivergedError, match=r"steps 3-4 \(2 in a row\) had a non-finite loss or gradients"):
        learner.update(*nan_batch)
    assert learner.state_dict()["training_step"]["skipped"] == 3


def test_a_diverging_learning_rate_stops_with_the_error_and_finite_weights(make_learner, batches):
    learner = make_learner(lr=1e3, total_steps=50, max_consecutive_skips=3)
    with pytest.raises(TrainingDivergedError, match=r"\(3 in a row\).*lr"):
        for step in range(50):
            learner.update(*batches[step % len(batches)])
    assert learner.step < 50
    for module in (learner.image_encoder, learner.inference_encoder):
        assert all(torch.isfinite(value).all() for value in module.state_dict().values())


def test_max_consecutive_skips_defaults_to_twenty_and_must_be_positive(make_learner):
    assert make_learner().training_step.max_consecutive_skips == 20
    with pytest.raises(ValueError, match="max_consecutive_skips"):
        make_learner(max_consecutive_skips=0)


@pytest.mark.parametrize("precision", ["fp32", "authors-fp16"])
def test_resume_across_a_skipped_step_is_bit_identical(make_learner, batches, precision):
    steps = list(batches)
    steps[2] = (with_nan(batches[2][0]), batches[2][1])
    uninterrupted = make_learner(precision=precision)
    expected = [uninterrupted.update(images, labels) for images, labels in steps]

    first = make_learner(precision=precision, max_consecutive_skips=2)
    for images, labels in steps[:3]:  # ends with the skipped step
        first.update(images, labels)
    saved = roundtrip(first.state_dict())
    resumed = make_learner(seed=123, precision=precision, max_consecutive_skips=2)
    resumed.load_state_dict(saved)
    got = [resumed.update(images, labels) for images, labels in steps[3:]]
    assert got == expected[3:]  # losses, lrs, BMA weights and the skip count
    assert_equal_states(snapshot(resumed.image_encoder), snapshot(uninterrupted.image_encoder))
    assert_equal_states(snapshot(resumed.inference_encoder), snapshot(uninterrupted.inference_encoder))

    again = make_learner(seed=123, precision=precision, max_consecutive_skips=2)
    again.load_state_dict(saved)  # the skip in a row before the checkpoint still counts
    with pytest.raises(TrainingDivergedError, match=r"steps 3-4"):
        again.update(*steps[2])

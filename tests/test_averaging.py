"""BMA against the explicit weighted average of Eq. (5) over a stored trajectory."""
import copy
import io
import math

import pytest
import torch
from torch import nn

from clipood_plugin import BetaMovingAverage, ExponentialMovingAverage, UniformAverage, build_averager


def beta_density(x, b):
    return x ** (b - 1) * (1 - x) ** (b - 1) * math.gamma(2 * b) / math.gamma(b) ** 2


def trajectory(steps, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    states = [copy.deepcopy(model.state_dict())]
    models = []
    for _ in range(steps):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        states.append(copy.deepcopy(model.state_dict()))
        models.append(copy.deepcopy(model))
    return model, states, models


def explicit_bma(states, beta):
    T = len(states) - 1
    alphas = [beta_density((t + 0.5) / (T + 1), beta) for t in range(T + 1)]
    return {k: sum(a * s[k].double() for a, s in zip(alphas, states)) / sum(alphas) for k in states[0]}


def starting_model(states):
    first = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    first.load_state_dict(states[0])
    return first


def averaged_trajectory(T, beta):
    """(BMA over a random trajectory of T steps, the T + 1 stored states)."""
    _, states, models = trajectory(T)
    bma = BetaMovingAverage(starting_model(states), total_steps=T, beta=beta)
    for model in models:
        bma.update(model)
    return bma, states


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0, 2.0])
def test_bma_is_equation_5(beta):
    T = 9
    bma, states = averaged_trajectory(T, beta)
    expected = explicit_bma(states, beta)
    assert bma.step == T
    for key, value in bma.module.state_dict().items():
        assert torch.allclose(value.double(), expected[key], atol=1e-5), key


def test_uniform_when_beta_is_one_and_pretrained_weight_counts():
    bma, states = averaged_trajectory(4, beta=1.0)
    mean = torch.stack([s["0.weight"] for s in states]).mean(0)
    assert torch.allclose(bma.module.state_dict()["0.weight"], mean, atol=1e-6)


def test_u_shape_weights_the_endpoints_most():
    model = nn.Linear(2, 2)
    bma = BetaMovingAverage(model, total_steps=100, beta=0.5)
    assert bma.weight_at(0) > bma.weight_at(50) < bma.weight_at(100)
    assert bma.weight_at(0) == pytest.approx(bma.weight_at(100))


def test_resume_is_bit_identical():
    T = 8
    _, states, models = trajectory(T)
    start = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    start.load_state_dict(states[0])
    uninterrupted = BetaMovingAverage(start, total_steps=T, beta=0.5)
    for model in models:
        uninterrupted.update(model)

    first_half = BetaMovingAverage(start, total_steps=T, beta=0.5)
    for model in models[:3]:
        first_half.update(model)
    buffer = io.BytesIO()
    torch.save(first_half.state_dict(), buffer)
    buffer.seek(0)
    resumed = BetaMovingAverage(nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3)), total_steps=T, beta=0.5)
    resumed.load_state_dict(torch.load(buffer))
    for model in models[3:]:
        resumed.update(model)
    assert resumed.step == uninterrupted.step and resumed.weight_sum == uninterrupted.weight_sum
    for a, b in zip(resumed.module.state_dict().values(), uninterrupted.module.state_dict().values()):
        assert torch.equal(a, b)


def test_errors_name_the_problem():
    model = nn.Linear(2, 2)
    bma = BetaMovingAverage(model, total_steps=1)
    bma.update(model)
    with pytest.raises(RuntimeError, match="total_steps=1"):
        bma.update(model)
    with pytest.raises(ValueError, match="positive integer"):
        BetaMovingAverage(model, total_steps=0)
    with pytest.raises(ValueError, match="beta"):
        BetaMovingAverage(model, total_steps=3, beta=0)
    state = BetaMovingAverage(model, total_steps=5).state_dict()
    with pytest.raises(ValueError, match="total_steps=5"):
        BetaMovingAverage(model, total_steps=6).load_state_dict(state)


def test_ema_forgets_the_start_geometrically():
    T, decay = 5, 0.8
    _, states, models = trajectory(T)
    first = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    first.load_state_dict(states[0])
    ema = ExponentialMovingAverage(first, decay=decay)
    for model in models:
        ema.update(model)
    expected = decay ** T * states[0]["0.weight"].double() + sum(
        (1 - decay) * decay ** (T - t) * states[t]["0.weight"].double() for t in range(1, T + 1))
    assert torch.allclose(ema.module.state_dict()["0.weight"].double(), expected, atol=1e-5)


def test_averaged_copy_is_frozen_and_separate():
    model = nn.Linear(2, 2)
    bma = BetaMovingAverage(model, total_steps=3)
    assert not any(p.requires_grad for p in bma.module.parameters())
    assert bma.module.weight.data_ptr() != model.weight.data_ptr()


def test_uniform_is_the_papers_mean_of_theta_1_to_T_without_the_pretrained_weights():
    T = 7
    _, states, models = trajectory(T)
    uniform = build_averager("uniform", starting_model(states), total_steps=T)
    assert isinstance(uniform, UniformAverage) and uniform.weight == 0.0  # a_0: theta_0 does not count
    uniform.update(models[0])
    for key, value in uniform.module.state_dict().items():
        assert torch.equal(value, states[1][key]), key  # after step 1 the average is theta_1 itself
    for model in models[1:]:
        uniform.update(model)
    assert uniform.step == T and uniform.weight == 1.0
    for key, value in uniform.module.state_dict().items():
        expected = sum(s[key].double() for s in states[1:]) / T  # (1/T) sum_{t=1..T} theta_t
        assert torch.allclose(value.double(), expected, atol=1e-6), key


def test_uniform_resumes_bit_identical():
    T = 6
    _, states, models = trajectory(T)
    uninterrupted = UniformAverage(starting_model(states))
    for model in models:
        uninterrupted.update(model)
    first_half = UniformAverage(starting_model(states))
    for model in models[:2]:
        first_half.update(model)
    buffer = io.BytesIO()
    torch.save(first_half.state_dict(), buffer)
    buffer.seek(0)
    resumed = UniformAverage(nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3)))
    resumed.load_state_dict(torch.load(buffer))
    for model in models[2:]:
        resumed.update(model)
    for a, b in zip(resumed.module.state_dict().values(), uninterrupted.module.state_dict().values()):
        assert torch.equal(a, b)


def authors_bma_trajectory(T, beta, fold_step):
    """A slow fp16 trajectory (the weights drift by 8 fp16 spacings over T steps, as at a small learning rate)
    averaged from theta_0 with ``fold_step(avg, theta, r)``, r = a_t / A_{t-1}; a_t the Beta pdf of the authors'
    main.py lines 54-56 (``beta_dist = sp.stats.beta(args.beta, args.beta)``,
    ``weight_func = lambda it: beta_dist.pdf((it + 0.5) / (total_iter + 1))``)."""
    def weight_func(it):
        return beta_density((it + 0.5) / (T + 1), beta)
    torch.manual_seed(0)
    theta_0 = torch.randn(2048).half()
    spacing = (torch.nextafter(theta_0.abs(), torch.tensor(float("inf"), dtype=torch.float16)) - theta_0.abs()).float()
    drift = 8 * spacing * torch.randn(2048)
    states = [theta_0] + [(theta_0.float() + t / T * drift).half() for t in range(1, T + 1)]
    average, weight_sum = theta_0.clone(), weight_func(0)
    for t in range(1, T + 1):
        weight = weight_func(t)
        average = fold_step(average, states[t], weight / weight_sum)
        weight_sum += weight
    return states, average


def averaged_as_the_learner_does(states, T, beta, authors_fold):
    start, current = nn.Linear(len(states[0]), 1, bias=False).half(), nn.Linear(len(states[0]), 1, bias=False).half()
    with torch.no_grad():
        start.weight.copy_(states[0])
        bma = BetaMovingAverage(start, total_steps=T, beta=beta, authors_fold=authors_fold)
        for state in states[1:]:
            current.weight.copy_(state)
            bma.update(current)
    return bma.module.weight.detach().view(-1)


def test_the_authors_fold_is_engine_py_in_fp16_and_the_lerp_is_not():
    T, beta = 200, 0.5

    # engine.py lines 28-31, GeneralMovingAverage.update, in the fp16 the weights are stored in:
    #     relative_weight = self.weight / self.weight_sum
    #     for moving_avg_param, param in zip(self.moving_avg.parameters(), self.model.parameters()):
    #         moving_avg_param.data = (moving_avg_param + relative_weight * param) / (1 + relative_weight)
    #     self.weight_sum += self.weight
    def engine_py(average, theta, relative_weight):
        return (average + relative_weight * theta) / (1 + relative_weight)

    states, authors = authors_bma_trajectory(T, beta, engine_py)
    assert authors.dtype == torch.float16
    assert torch.equal(averaged_as_the_learner_does(states, T, beta, authors_fold=True), authors)

    # at this pace the lerp's increments fall below half an fp16 spacing and round away: the lerp ends far
    # from the authors' average, by more than half of the distance the exact average moved from theta_0
    lerp = averaged_as_the_learner_does(states, T, beta, authors_fold=False)
    exact = explicit_bma([{"w": s} for s in states], beta)["w"]
    moved = (exact - states[0].double()).norm()
    assert (lerp.double() - authors.double()).norm() > 0.5 * moved


def test_the_authors_fold_is_equation_5_in_fp32():
    T, beta = 9, 0.5
    _, states, models = trajectory(T)
    bma = BetaMovingAverage(starting_model(states), total_steps=T, beta=beta, authors_fold=True)
    for model in models:
        bma.update(model)
    expected = explicit_bma(states, beta)
    for key, value in bma.module.state_dict().items():
        assert torch.allclose(value.double(), expected[key], atol=1e-5), key

"""Weight averaging over a training trajectory: Beta Moving Average (Eq. 5-7) and its ablations (Figure 5d).

Every averager keeps one frozen copy of the model, starting from the weights it is given (theta_0,
the pretrained model), and folds each new set of weights in with one ``torch._foreach_lerp_`` over
all floating-point parameters: ``avg += c_t * (theta_t - avg)``. Only ``c_t`` differs between them.
BMA can instead fold as the authors' code does (``authors_fold``), which differs from the lerp only in
how fp16 weights round.
"""
import copy
import math

import torch
from torch import nn

from .settings import AVERAGING_CHOICES


def beta_pdf(x, beta):
    """Density of the symmetric Beta(beta, beta) distribution at x in (0, 1)."""
    log_norm = 2 * math.lgamma(beta) - math.lgamma(2 * beta)
    return math.exp((beta - 1) * (math.log(x) + math.log1p(-x)) - log_norm)


class _WeightAverage:
    """One averaged copy of a model, updated in place after every optimizer step."""

    def __init__(self, model: nn.Module):
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.step = 0
        self._avg_floats = self._floats(self.module)

    @staticmethod
    def _floats(model):
        return [t for t in model.state_dict(keep_vars=True).values() if t.is_floating_point()]

    def _next_coefficient(self) -> float:
        """Advance to the next step and return its lerp coefficient c_t."""
        raise NotImplementedError

    @torch.no_grad()
    def update(self, model: nn.Module):
        """Fold the current weights of ``model`` into the average (call after each optimizer step)."""
        coefficient = self._next_coefficient()
        current = self._floats(model)
        if len(current) != len(self._avg_floats):
            raise ValueError("update() got a model with a different set of tensors than the averaged one")
        self._fold(current, coefficient)
        return coefficient

    def _fold(self, current, coefficient):
        torch._foreach_lerp_(self._avg_floats, current, coefficient)

    def _extra_state(self):
        return {}

    def state_dict(self):
        return {"module": self.module.state_dict(), "step": self.step, **self._extra_state()}

    def load_state_dict(self, state):
        self.module.load_state_dict(state["module"])
        self.step = state["step"]


class BetaMovingAverage(_WeightAverage):
    """BMA: theta = sum_t a_t theta_t / sum_t a_t over t = 0..T, a_t = Beta(beta, beta).pdf((t + 0.5) / (T + 1)).

    theta_0 is the model given here; ``update`` must then be called once after each of the
    ``total_steps`` optimizer steps (Eq. 7: ``avg <- avg + (a_t / A_t) * (theta_t - avg)``).
    ``beta = 1`` is the uniform average of theta_0..theta_T, the pretrained weights included.

    ``authors_fold``: fold as the authors' GeneralMovingAverage.update does (engine.py lines 28-30),
    ``avg <- (avg + r_t * theta_t) / (1 + r_t)`` with ``r_t = a_t / A_{t-1}``, each operation rounded to the
    stored dtype. The same average in exact arithmetic; in fp16 the lerp drops every increment
    ``c_t * (theta_t - avg)`` below half an fp16 spacing, so over thousands of small steps it lags toward
    theta_0, while this fold rounds values of the size of the weights themselves, without that bias. It is
    the fold of precision "authors-fp16", whose weights and average are fp16.
    """

    def __init__(self, model: nn.Module, total_steps: int, beta: float = 0.5, authors_fold: bool = False):
        if int(total_steps) != total_steps or total_steps < 1:
            raise ValueError(f"total_steps must be a positive integer (the number of optimizer steps), got {total_steps!r}")
        if not beta > 0:
            raise ValueError(f"beta must be > 0 (0.5 for domain shift, 0.1 for base-to-new in the paper), got {beta!r}")
        super().__init__(model)
        self.total_steps = int(total_steps)
        self.beta = float(beta)
        self.authors_fold = bool(authors_fold)
        self.weight = self.weight_at(0)
        self.weight_sum = self.weight
        self._relative_weight = None  # r_t = a_t / A_{t-1} of the latest step

    def weight_at(self, t: int) -> float:
        """a_t, the unnormalized weight of the weights after step t."""
        return beta_pdf((t + 0.5) / (self.total_steps + 1), self.beta)

    def _next_coefficient(self):
        if self.step >= self.total_steps:
            raise RuntimeError(f"BetaMovingAverage was built for total_steps={self.total_steps} and has already "
                               "averaged all of them; build it with the number of optimizer steps the run really makes")
        self.step += 1
        self.weight = self.weight_at(self.step)
        self._relative_weight = self.weight / self.weight_sum
        self.weight_sum += self.weight
        return self.weight / self.weight_sum

    def _fold(self, current, coefficient):
        if not self.authors_fold:
            return super()._fold(current, coefficient)
        # avg + r * theta, then / (1 + r): the authors' order, each foreach op rounding as their tensor op does
        torch._foreach_add_(self._avg_floats, torch._foreach_mul(current, self._relative_weight))
        torch._foreach_div_(self._avg_floats, 1 + self._relative_weight)

    def _extra_state(self):
        return {"weight_sum": self.weight_sum, "total_steps": self.total_steps, "beta": self.beta}

    def load_state_dict(self, state):
        if (state["total_steps"], state["beta"]) != (self.total_steps, self.beta):
            raise ValueError(f"checkpoint was averaged with total_steps={state['total_steps']}, beta={state['beta']}; "
                             f"this run has total_steps={self.total_steps}, beta={self.beta}")
        super().load_state_dict(state)
        self.weight_sum = state["weight_sum"]
        self.weight = self.weight_at(self.step)


class ExponentialMovingAverage(_WeightAverage):
    """EMA ablation: avg <- decay * avg + (1 - decay) * theta_t; theta_0's weight decays as decay**T."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        super().__init__(model)
        self.decay = float(decay)
        self.weight = 1.0 - self.decay

    def _next_coefficient(self):
        self.step += 1
        return self.weight

    def _extra_state(self):
        return {"decay": self.decay}


class UniformAverage(_WeightAverage):
    """The paper's theta_AVG = (1/T) sum_{t=1..T} theta_t (Figure 5d): the mean of the trained weights,
    without theta_0. ``c_t = 1/t`` keeps the running mean, so after step 1 the average is theta_1 exactly."""

    @property
    def weight(self):
        """a_t: 0 for theta_0, 1 for every later step."""
        return float(self.step > 0)

    def _next_coefficient(self):
        self.step += 1
        return 1.0 / self.step


def build_averager(kind, model, total_steps, beta=0.5, ema_decay=0.999, authors_fold=False):
    """The averager for one of AVERAGING_CHOICES, or None for "none" (predict with the last weights).
    The uniform average of theta_0..theta_T (the pretrained weights included) is "bma" with beta 1.
    ``authors_fold`` is BMA's (the authors' code has no other averager); the ablations always lerp."""
    if kind == "bma":
        return BetaMovingAverage(model, total_steps, beta, authors_fold)
    if kind == "uniform":
        return UniformAverage(model)
    if kind == "ema":
        return ExponentialMovingAverage(model, ema_decay)
    if kind == "none":
        return None
    raise ValueError(f"unknown averaging {kind!r}; choose one of {AVERAGING_CHOICES}")

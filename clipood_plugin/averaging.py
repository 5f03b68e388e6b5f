"""Weight averaging over a training trajectory: Beta Moving Average (Eq. 5-7), its ablations (Figure 5d)
and SWAD.

Every averager keeps one frozen copy of the model, starting from the weights it is given (theta_0,
the pretrained model), and folds each new set of weights in with a lerp over all floating-point weights:
``avg += c_t * (theta_t - avg)``. Only ``c_t`` differs between them. The copy's weights are views into one
flat buffer per dtype (flat_weights.py); a model laid out alike (the learner's) folds in with one ``lerp_``
per buffer, any other with one ``torch._foreach_lerp_`` over the tensors.
BMA can instead fold as the authors' code does (``authors_fold``), which differs from the lerp only in
how fp16 weights round. SWAD also needs the validation loss of the current weights every few steps
(``validation_due`` / ``record_validation_loss``) to find the window it averages.
"""
import copy
import math
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from .flat_weights import FlatLayout, flatten, floating_tensors
from .settings import AVERAGING_CHOICES, SETTINGS, SWAD_DEFAULTS


def beta_pdf(x, beta):
    """Density of the symmetric Beta(beta, beta) distribution at x in (0, 1)."""
    log_norm = 2 * math.lgamma(beta) - math.lgamma(2 * beta)
    return math.exp((beta - 1) * (math.log(x) + math.log1p(-x)) - log_norm)


class _WeightAverage:
    """One averaged copy of a model, updated in place after every optimizer step."""

    # whether the fold may run over flat buffers; SWAD's segments are per-tensor lists
    _folds_flat = True

    def __init__(self, model: nn.Module):
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        flatten(self.module)
        self.step = 0
        self._avg_floats = floating_tensors(self.module)
        self._avg_layout = FlatLayout.of(self._avg_floats)
        self._source = None  # (weak reference to the latest model, its FlatLayout) when laid out as the average

    def _next_coefficient(self) -> float:
        """Advance to the next step and return its lerp coefficient c_t."""
        raise NotImplementedError

    @torch.no_grad()
    def update(self, model: nn.Module):
        """Fold the current weights of ``model`` into the average (call after each optimizer step)."""
        coefficient = self._next_coefficient()
        self._fold(*self._aligned_weights(model), coefficient)
        return coefficient

    def _aligned_weights(self, model):
        """(averaged, current): the flat buffers of both when ``model`` is laid out as the average, else the
        tensors. The latest model's layout is kept, so a step of the same model costs no walk over its tensors."""
        if self._source is not None and self._source[0]() is model and self._source[1].intact() \
                and self._avg_layout is not None and self._avg_layout.intact():
            return self._avg_layout.buffers, self._source[1].buffers
        current = floating_tensors(model)
        if len(current) != len(self._avg_floats):
            raise ValueError("update() got a model with a different set of tensors than the averaged one")
        self._source = None
        if self._folds_flat:
            if self._avg_layout is None or not self._avg_layout.intact():  # the copy was moved (module.to)
                self._avg_layout = FlatLayout.of(self._avg_floats)
            layout = FlatLayout.of(current)
            if layout is not None and self._avg_layout is not None and layout.signature == self._avg_layout.signature:
                self._source = (weakref.ref(model), layout)
                return self._avg_layout.buffers, layout.buffers
        return self._avg_floats, current

    def _fold(self, averaged, current, coefficient):
        _lerp_(averaged, current, coefficient)

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

    def __init__(self, model: nn.Module, total_steps: int, beta: float = SETTINGS["beta"].default,
                 authors_fold: bool = False):
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

    def _fold(self, averaged, current, coefficient):
        if not self.authors_fold:
            return super()._fold(averaged, current, coefficient)
        # avg + r * theta, then / (1 + r): the authors' order, each foreach op rounding as their tensor op does
        torch._foreach_add_(averaged, torch._foreach_mul(current, self._relative_weight))
        torch._foreach_div_(averaged, 1 + self._relative_weight)

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

    def __init__(self, model: nn.Module, decay: float = SETTINGS["ema_decay"].default):
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


@dataclass
class _Segment:
    """The dense average of the weights after the steps since the previous validation, and the validation
    loss of the weights at its end."""
    weights: list
    steps: int
    loss: float
    end: int  # the step whose weights it ends with


class SWAD(_WeightAverage):
    """SWAD (Cha et al., NeurIPS 2021): the dense average of the weights after every step of the window
    [t_s, t_e] in which the validation loss of the current weights stays low.

    The validation loss L_k of the current weights is recorded every ``every`` steps and at the last step;
    segment k is the dense average of the weights after the steps since the previous record (theta_0, the
    pretrained weights, is in none). With N_s = ``n_converge``, N_e = ``n_tolerance`` and r =
    ``tolerance_ratio``, as in the paper's Sec. 3.4:
    - t_s: the first segment k whose loss is the least of L_k..L_{k+N_s-1} (the first minimum, as numpy's
      argmin picks it in the authors' LossValley);
    - threshold = (1 + r) * mean(L_{t_s}..L_{t_s+N_s-1});
    - t_e: the last segment k >= t_s before the first one with min(L_k..L_{k+N_e-1}) > threshold (at the end
      of the run the look-ahead holds the losses there are); after it the valley is "dead" and nothing more
      is averaged.
    ``module`` is the average of segments t_s..t_e weighted by their steps, i.e. of every step's weights in
    the window, and is final once the last step's loss is recorded. Until the first segment of the window
    is decided, and for a run that never converges (as LossValley's get_final_model), it is the latest
    segment. Defaults: settings.SWAD_DEFAULTS, the SWAD authors'.
    """

    def __init__(self, model: nn.Module, total_steps: int, every=SWAD_DEFAULTS["swad_every"],
                 n_converge=SWAD_DEFAULTS["swad_n_converge"], n_tolerance=SWAD_DEFAULTS["swad_n_tolerance"],
                 tolerance_ratio=SWAD_DEFAULTS["swad_tolerance_ratio"]):
        super().__init__(model)
        self.total_steps, self.every = int(total_steps), int(every)
        self.n_converge, self.n_tolerance = int(n_converge), int(n_tolerance)
        self.tolerance_ratio = float(tolerance_ratio)
        self._segment = [torch.zeros_like(t) for t in self._avg_floats]
        self._segment_steps = 0
        self._pending = []  # recorded segments not yet decided (candidates for t_s, then for the window)
        self.losses = []  # (step, L_k) of every record
        self.threshold = None  # set at convergence
        self.window = None  # (first step, last step) of the averaged window
        self.window_steps = 0
        self.dead = False

    @property
    def converged(self):
        return self.threshold is not None

    @property
    def validation_due(self):
        """Whether the validation loss of the current weights must be recorded before the next update."""
        recorded = self.losses[-1][0] if self.losses else 0
        return self.step > recorded and (self.step % self.every == 0 or self.step == self.total_steps)

    def _next_coefficient(self):
        if self.validation_due:
            raise RuntimeError(f"SWAD needs the validation loss of the weights after step {self.step} before the "
                               "next update (the learner's validate())")
        if self.step >= self.total_steps:
            raise RuntimeError(f"SWAD was built for total_steps={self.total_steps} and has seen all of them")
        self.step += 1
        self._segment_steps += 1
        return 1.0 / self._segment_steps

    _folds_flat = False

    def _fold(self, averaged, current, coefficient):
        if not self.dead:  # after the window nothing more is averaged (the authors' loop stops there)
            torch._foreach_lerp_(self._segment, current, coefficient)

    @torch.no_grad()
    def record_validation_loss(self, loss):
        """Close the segment at this step with the validation loss of the current weights."""
        if not self.validation_due:
            raise RuntimeError(f"no SWAD validation is due at step {self.step} (every {self.every} steps and the last)")
        if not math.isfinite(loss):
            raise ValueError(f"the validation loss at step {self.step} is {loss}, not finite")
        self.losses.append((self.step, float(loss)))
        if not self.dead:
            segment = _Segment(self._segment, self._segment_steps, float(loss), self.step)
            self._segment = [torch.zeros_like(t) for t in self._avg_floats]
            self._pending.append(segment)
            if not self.converged:
                self._detect_convergence()
            if self.converged:
                self._decide(final=self.step == self.total_steps)
            if not self.window_steps:  # no window yet: predict with the latest segment
                torch._foreach_copy_(self._avg_floats, segment.weights)
        self._segment_steps = 0

    def describe(self):
        """One line on what the SWAD model averages so far."""
        if self.window:
            return (f"SWAD averages the weights after steps {self.window[0]}-{self.window[1]}"
                    + (" (the loss valley ended there)" if self.dead else ""))
        if self.converged:
            return f"SWAD converged (loss threshold {self.threshold:.4g}); its window is not decided yet"
        return "SWAD has not converged: it predicts with the latest segment's average"

    def _detect_convergence(self):
        candidates = self._pending[-self.n_converge:]
        if len(candidates) < self.n_converge:
            return
        losses = [segment.loss for segment in candidates]
        if min(losses) == losses[0]:  # the first minimum is the oldest: t_s
            self.threshold = (1.0 + self.tolerance_ratio) * sum(losses) / len(losses)
            self._pending = candidates
        else:  # the oldest can no longer be t_s
            self._pending = candidates[1:]

    def _decide(self, final):
        """Fold in the oldest pending segments whose look-ahead of N_e losses is known (all when ``final``) and
        stays under the threshold for some loss; the first that does not ends the window."""
        while self._pending and (final or len(self._pending) >= self.n_tolerance):
            ahead = [segment.loss for segment in self._pending[:self.n_tolerance]]
            if min(ahead) > self.threshold:
                self.dead, self._pending = True, []
                return
            segment = self._pending.pop(0)
            self.window_steps += segment.steps
            torch._foreach_lerp_(self._avg_floats, segment.weights, segment.steps / self.window_steps)
            self.window = (self.window[0] if self.window else segment.end - segment.steps + 1, segment.end)

    def _extra_state(self):
        return {"every": self.every, "n_converge": self.n_converge, "n_tolerance": self.n_tolerance,
                "tolerance_ratio": self.tolerance_ratio, "total_steps": self.total_steps,
                "segment": self._segment, "segment_steps": self._segment_steps,
                "pending": [(s.weights, s.steps, s.loss, s.end) for s in self._pending], "losses": self.losses,
                "threshold": self.threshold, "window": self.window, "window_steps": self.window_steps,
                "dead": self.dead}

    def load_state_dict(self, state):
        settings = ("every", "n_converge", "n_tolerance", "tolerance_ratio", "total_steps")
        saved, mine = ({k: source(k) for k in settings} for source in (state.get, lambda k: getattr(self, k)))
        if saved != mine:
            raise ValueError(f"checkpoint was averaged with SWAD settings {saved}; this run has {mine}")
        super().load_state_dict(state)
        torch._foreach_copy_(self._segment, state["segment"])
        self._segment_steps = state["segment_steps"]
        device = self._segment[0].device
        self._pending = [_Segment([t.to(device) for t in weights], steps, loss, end)
                         for weights, steps, loss, end in state["pending"]]
        self.losses = [tuple(entry) for entry in state["losses"]]
        self.threshold, self.window_steps, self.dead = state["threshold"], state["window_steps"], state["dead"]
        self.window = None if state["window"] is None else tuple(state["window"])


def _lerp_(averaged, current, weight):
    """avg += weight * (theta - avg), pair by pair, in as few launches as there can be: over a few long tensors
    (the flat buffers, one per dtype) one lerp kernel each, which a multi-tensor launch would split into
    chunks; over many (a model's separate tensors) one multi-tensor launch. Both round the same."""
    if len(averaged) > 2:
        return torch._foreach_lerp_(averaged, current, weight)
    for average, theta in zip(averaged, current):
        average.lerp_(theta, weight)


def build_averager(kind, model, total_steps, beta=SETTINGS["beta"].default, ema_decay=SETTINGS["ema_decay"].default,
                   authors_fold=False, swad=None):
    """The averager for one of AVERAGING_CHOICES, or None for "none" (predict with the last weights).
    The uniform average of theta_0..theta_T (the pretrained weights included) is "bma" with beta 1.
    ``authors_fold`` is BMA's (the authors' code has no other averager); the ablations always lerp.
    ``swad``: SWAD's keyword arguments (every, n_converge, n_tolerance, tolerance_ratio)."""
    if kind == "swad":
        return SWAD(model, total_steps, **(swad or {}))
    if kind == "bma":
        return BetaMovingAverage(model, total_steps, beta, authors_fold)
    if kind == "uniform":
        return UniformAverage(model)
    if kind == "ema":
        return ExponentialMovingAverage(model, ema_decay)
    if kind == "none":
        return None
    raise ValueError(f"unknown averaging {kind!r}; choose one of {AVERAGING_CHOICES}")

"""The numerics of one training step, apart from the learner's bookkeeping.

What a step does with numbers: the precision of the forward and backward passes (autocast, an fp16 loss
scale), how the trained weights are stored (fp32 master weights, or the authors' fp16 weights with an fp32
round trip around AdamW), the fused AdamW step, and the guard that skips a step whose loss or gradients
are not finite without making the host wait for the device.
"""
import contextlib

import torch

from .errors import LearnedNothingError, TrainingDivergedError
from .settings import SETTINGS

DEFAULT_MAX_CONSECUTIVE_SKIPS = SETTINGS["max_consecutive_skips"].default
# a run that skipped more than this share of its steps ends as failed: its weights are barely trained
MAX_SKIPPED_SHARE = 0.5
# what a loss that is not finite from the first step usually comes from, as each front end spells the settings
NON_FINITE_CAUSES = ("check the input normalization (image_norm: `clipood train --image-norm`, DomainBed's "
                     "clip_image_norm hparam, Dassl's TRAINER.CLIPOOD.IMAGE_NORM; input_mean/input_std: a tiny std "
                     "makes every input huge), images holding NaN or inf values, and the learning rate (lr, "
                     "`clipood train --lr`, DomainBed's lr hparam, Dassl's OPTIM.LR)")


def resolve_precision(precision, device):
    """``precision`` with "auto" made concrete: bf16 autocast on a CUDA GPU that has it, else fp16; fp32 elsewhere."""
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    return "amp-bf16" if torch.cuda.is_bf16_supported() else "amp-fp16"


def clip_storage(precision):
    """The ``load_clip`` precision a resolved ``precision`` builds CLIP in: under "authors-fp16" "fp16", the
    storage openai CLIP gives the authors' model (the whole model, so that the text features come from the
    fp16 text tower and the BMA copy of the image encoder is fp16 too); "fp32" otherwise."""
    return "fp16" if precision == "authors-fp16" else "fp32"


def input_dtype(precision):
    """The dtype images enter the image encoder in: fp16 under "authors-fp16", whose forward pass is pure
    fp16 (fp16 weights and activations; the authors' README has openai CLIP's VisionTransformer.forward
    cast its input to conv1's dtype), fp32 otherwise (autocast casts inside)."""
    return torch.float16 if precision == "authors-fp16" else torch.float32


def autocast(precision, device):
    """The forward pass's autocast context for a resolved ``precision``: none for fp32 and for the pure fp16
    of "authors-fp16" (CUDA's fp16 autocast runs other arithmetic: fp32 weights cast per op, fp32 norms
    and softmax)."""
    if precision in ("fp32", "authors-fp16"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "amp-bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


class TrainingStep:
    """Backward pass, non-finite check and AdamW step for the trainable weights of ``module``.

    A step whose loss or gradients hold a NaN or inf changes no weight and no optimizer state: the check
    leaves a flag on the device and fused AdamW skips on that flag (the mechanism GradScaler uses for
    fp16), so nothing waits for the host. The caller reads the flag together with the loss it reads
    anyway and hands it to ``record``, which counts skipped steps and raises TrainingDivergedError after
    ``max_consecutive_skips`` of them in a row.

    "authors-fp16" (fp16 weights, ``clip_storage``): AdamW steps fp32 copies that each step starts
    from the fp16 weights and ends by rounding back into them, the reference code's round trip
    (convert_models_to_fp32, optimizer.step(), convert_weights); its optimizer state is fp32 and its
    loss is not scaled, as there.
    """

    def __init__(self, module, precision, lr, weight_decay, max_consecutive_skips=DEFAULT_MAX_CONSECUTIVE_SKIPS):
        if isinstance(max_consecutive_skips, bool) or int(max_consecutive_skips) != max_consecutive_skips \
                or max_consecutive_skips < 1:
            raise ValueError("max_consecutive_skips must be a positive integer (non-finite steps in a row that "
                             f"end a run as diverged), got {max_consecutive_skips!r}")
        self.module = module
        params = [p for p in module.parameters() if p.requires_grad]
        self._fp16_weights = [p for p in params if p.dtype != torch.float32]
        self._fp32_copies = [torch.empty_like(p, dtype=torch.float32) for p in self._fp16_weights]
        for copy in self._fp32_copies:
            copy.grad = torch.empty_like(copy)
        copy_of = {id(p): copy for p, copy in zip(self._fp16_weights, self._fp32_copies)}
        # fused: the kernel takes the skip flag as a device tensor (found_inf)
        self.optimizer = torch.optim.AdamW([copy_of.get(id(p), p) for p in params], lr=lr,
                                           weight_decay=weight_decay, fused=True)
        self.scaler = torch.amp.GradScaler(params[0].device.type, enabled=precision == "amp-fp16")
        self._one = torch.ones((), device=params[0].device)
        self.max_consecutive_skips = int(max_consecutive_skips)
        self.skipped = 0  # steps skipped for a non-finite loss or gradients, over the whole run
        self.consecutive_skipped = 0  # of them, the latest in a row

    def zero_grad(self):
        self.module.zero_grad(set_to_none=True)

    def backward(self, loss):
        self.scaler.scale(loss).backward()

    @torch.no_grad()
    def step(self, loss):
        """The AdamW step, skipped when ``loss`` or a gradient is not finite; returns that skip flag as a
        0-d float tensor on the device (1.0: skipped) without waiting for it.

        Under DDP the gradients checked are the all-reduced ones, so every rank skips the same steps.
        """
        found_inf = torch.isfinite(loss).logical_not().float()
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        if self._fp16_weights:
            torch._foreach_copy_(self._fp32_copies, self._fp16_weights)
            torch._foreach_copy_([copy.grad for copy in self._fp32_copies], [p.grad for p in self._fp16_weights])
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, self._one)  # sets found_inf only
        # the attributes through which GradScaler hands fused optimizers its flag
        self.optimizer.grad_scale, self.optimizer.found_inf = None, found_inf
        self.optimizer.step()
        if self._fp16_weights:
            torch._foreach_copy_(self._fp16_weights, self._fp32_copies)  # rounds to the nearest fp16
        if self.scaler.is_enabled():
            self.scaler.update()
        return found_inf

    def record(self, skipped, step, total_steps):
        """Count step number ``step`` (1-based) of ``total_steps``, whose flag the caller has read. Raise
        LearnedNothingError when every step so far was skipped (at ``max_consecutive_skips`` steps or at the
        last one) or, at the last step, more than MAX_SKIPPED_SHARE of them; TrainingDivergedError when it
        makes ``max_consecutive_skips`` skipped steps in a row after a finite one."""
        if not skipped:
            self.consecutive_skipped = 0
        else:
            self.skipped += 1
            self.consecutive_skipped += 1
        if self.skipped == step and step in (self.max_consecutive_skips, total_steps):
            raise LearnedNothingError(
                f"the run learned nothing: each of its {step} step(s) had a non-finite loss or gradients from the "
                f"first step on and was skipped, so the weights are the initial ones; {NON_FINITE_CAUSES}")
        if self.consecutive_skipped >= self.max_consecutive_skips:
            first = step - self.consecutive_skipped + 1
            raise TrainingDivergedError(
                f"training diverged: steps {first}-{step} ({self.consecutive_skipped} in a row) had a non-finite "
                f"loss or gradients and were skipped, so the weights are still those after step {first - 1}. "
                "The settings passed their checks, so the usual causes are a learning rate too large for this "
                "model (lr, `clipood train --lr`, DomainBed's lr hparam, Dassl's OPTIM.LR), images holding NaN "
                "or inf values, or fp16 numerics (precision fp32 rules them out)")
        if step == total_steps and self.skipped > MAX_SKIPPED_SHARE * total_steps:
            raise LearnedNothingError(
                f"the run learned too little to report: {self.skipped} of its {total_steps} steps (more than "
                f"{MAX_SKIPPED_SHARE:.0%}) had a non-finite loss or gradients and were skipped; {NON_FINITE_CAUSES}")

    # ----------------------------------------------------------------- state
    def state_dict(self):
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "skipped": self.skipped, "consecutive_skipped": self.consecutive_skipped}

    def check_state(self, state):
        """Raise ValueError unless ``load_state_dict(state)`` will succeed; changes nothing."""
        if not isinstance(state, dict) or {"optimizer", "scaler", "skipped", "consecutive_skipped"} - set(state):
            raise ValueError("the checkpoint's training_step entry lacks the optimizer, scaler or skip counts")
        if not all(isinstance(state[key], int) and state[key] >= 0 for key in ("skipped", "consecutive_skipped")):
            raise ValueError("the checkpoint's skip counts are not non-negative integers")
        if bool(state["scaler"]) != self.scaler.is_enabled():
            raise ValueError("the checkpoint was trained with" + ("" if state["scaler"] else "out")
                             + " an fp16 loss scale (precision amp-fp16) and this learner "
                             + ("is" if self.scaler.is_enabled() else "is not") + "; build it with the checkpoint's "
                             "precision to resume")
        optimizer = state["optimizer"]
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        groups = optimizer.get("param_groups") if isinstance(optimizer, dict) else None
        if not isinstance(groups, list) or [len(g.get("params", ())) for g in groups] != \
                [len(g["params"]) for g in self.optimizer.param_groups]:
            raise ValueError(f"the checkpoint's optimizer state is not one of AdamW over {len(params)} tensors")
        for index, param_state in optimizer.get("state", {}).items():
            if not (isinstance(index, int) and 0 <= index < len(params)):
                raise ValueError(f"the checkpoint's optimizer state names a tensor {index!r} this learner lacks")
            for key in ("exp_avg", "exp_avg_sq"):
                value = param_state.get(key)
                if not isinstance(value, torch.Tensor) or value.shape != params[index].shape:
                    raise ValueError(f"the checkpoint's optimizer {key} of tensor {index} does not have the shape "
                                     f"{tuple(params[index].shape)} of this learner's weight")

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.skipped, self.consecutive_skipped = state["skipped"], state["consecutive_skipped"]

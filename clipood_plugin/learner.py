"""CLIPoodLearner: the one training object behind the command line and the framework adapters."""
import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .averaging import build_averager
from .backbone import InputAdapter, image_size_of, load_clip, resolve_architecture
# the format's names are also importable from here, where they were defined before checkpoint_format.py
from .checkpoint_format import (BUILD_KEYS, CHECKPOINT_FORMAT, INFERENCE_KEYS, LATER_TRAJECTORY_KEYS,  # noqa: F401
                                TRAINING_HPARAMS, TRAJECTORY_KEYS, UNRECORDED_IMAGE_NORM, check_loadable, check_tensors,
                                describe, inference_state)
from .flat_weights import flatten
from .heads import LinearHeadClassifier
from .image_input import ImageInput
from .loss import margin_metric_softmax
from .prompts import PromptEncoder
from .settings import ARGUMENT, CONFIG, check_rules, check_settings, defaults, learner_names
from .training_step import TrainingStep, autocast, clip_storage, input_dtype, resolve_precision

# CLIPoodLearner's keyword settings besides class_names and total_steps, and their defaults (the table's)
LEARNER_SETTINGS = tuple(name for name in learner_names(CONFIG, ARGUMENT) if name not in ("class_names", "total_steps"))
LEARNER_DEFAULTS = defaults(LEARNER_SETTINGS)
IMAGE_DTYPES = (torch.uint8, torch.float32, torch.float16, torch.bfloat16)


def _compile_mode(choice, device, ranks):
    """torch.compile's mode for the training step, or None to run it uncompiled. "auto" on one CUDA device is
    CUDA graphs, the fastest mode measured on an H200 (3.1x the reference-style step at batch 36, against 1.5x
    for the default mode; docs/benchmarks.md); under DDP, where CUDA graphs were not measured, the default."""
    if choice == "off" or (choice == "auto" and device.type != "cuda"):
        return None
    if choice == "auto":
        return "reduce-overhead" if ranks == 1 else "default"
    return "reduce-overhead" if choice == "reduce-overhead" else "default"


class CLIPoodLearner:
    """CLIP image encoder fine-tuned with Margin Metric Softmax against cached class text features,
    AdamW with a cosine schedule over ``total_steps`` on fp32 master weights, and a Beta Moving
    Average of the weight trajectory that ``predict`` uses.

    Its keyword settings besides ``class_names`` and ``total_steps`` (LEARNER_SETTINGS: model_name, pretrained,
    lr, weight_decay, margin, beta, ...) are those of clipood_plugin.settings.TABLE, with the table's defaults and
    ranges; ``self.config`` records those the table marks CONFIG.

    Baselines and ablations (the paper's Figure 5): ``head="linear"`` trains a linear classifier
    initialized from the class text features with plain cross-entropy (Eq. 1, standard fine-tuning)
    instead of the text head (Eq. 2); ``margin_kind`` is "adaptive" (MMS), "fixed" (``margin`` for
    every wrong class) or "none" (``margin=0`` is the same: plain vision-language fine-tuning);
    ``averaging`` is "bma", "uniform" (theta_1..theta_T), "ema", "swad" or "none"; ``zero_shot=True``
    builds a learner that never trains. SWAD (``swad_*``: its evaluation interval, N_s, N_e and r; see
    averaging.SWAD) needs the validation loss of the current weights whenever ``validation_due``: call
    ``validate`` with held-out training-domain batches then.
    ``compile`` runs the training forward and backward through torch.compile ("auto": on CUDA, with CUDA
    graphs on one device, as "reduce-overhead"; "on": the default mode, no CUDA graphs); if compiling fails,
    training goes on uncompiled with a warning.
    ``precision``: "auto" (bf16 autocast on a CUDA GPU that has it, else fp16 with a loss scale; fp32
    elsewhere), "fp32", "amp-bf16", "amp-fp16", or "authors-fp16", the authors' arithmetic: openai CLIP's
    fp16 storage, a pure fp16 forward pass, fp16 text features normalized once and an fp16 loss, an fp32
    round trip around AdamW (training_step.py) and their BMA fold into an fp16 copy. A step whose loss or
    gradients are not finite is skipped and counted; ``max_consecutive_skips`` of them in a row raise
    TrainingDivergedError.
    The model's input (``image_input``: size, normalization, resize) is the weights' own where they describe it
    (an open_clip tag, a `clipood export` file), else the one ``image_norm`` names ("auto": OpenAI's; see
    clipood_plugin.image_input); ``preprocess_train``/``preprocess_val`` make it from PIL images. Images given
    to ``update``/``predict`` are uint8 pixels (0-255; ``preprocess_train``'s crops), normalized on the device
    with the model's own statistics, or floats in another normalization (``input_mean``/``input_std``, which
    apply to floats only; default: the model's own), at any resolution; they are mapped to the model's input
    exactly.

    Under torch.distributed (a process group of several ranks, e.g. from torchrun) ``update`` trains
    data-parallel: each rank passes its share of the global batch, DDP averages the gradients (weighted
    so that the step is the one of the whole global batch), every rank ends the step with the same
    weights and hence the same BMA copy, and the returned loss and accuracy are the global batch's.
    ``predict`` stays local to the rank.
    """

    def __init__(self, *, class_names, total_steps=None, **settings):
        unknown = sorted(set(settings) - set(LEARNER_SETTINGS))
        if unknown:
            raise TypeError(f"CLIPoodLearner got unexpected keyword arguments {unknown}; its settings: "
                            f"class_names, total_steps, {', '.join(LEARNER_SETTINGS)}")
        settings = {**LEARNER_DEFAULTS, **settings, "total_steps": total_steps}
        zero_shot, device = settings["zero_shot"], settings.pop("device")
        check_settings(settings, training=not zero_shot)
        check_rules(settings)
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.precision = resolve_precision(settings["precision"], self.device)
        self._authors_arithmetic = self.precision == "authors-fp16"
        architecture = resolve_architecture(settings["model_name"], settings["pretrained"])
        pretrained, templates = settings["pretrained"], settings["templates"]
        self.config = {name: settings[name] for name in learner_names(CONFIG)}
        self.config.update(model_name=architecture, pretrained=None if pretrained is None else str(pretrained),
                           total_steps=None if zero_shot else int(total_steps),
                           templates=tuple([templates] if isinstance(templates, str) else templates))
        lr, weight_decay, image_norm = settings["lr"], settings["weight_decay"], settings["image_norm"]

        clip_model, self.preprocess_train, self.preprocess_val, tokenizer = load_clip(
            architecture, pretrained, precision=clip_storage(self.precision), image_norm=image_norm)
        self.image_input = ImageInput.of_model(clip_model)
        self.config["image_norm"] = self.image_input.norm  # reloads rebuild this input, whatever the weights' path
        clip_model.eval()
        self.image_encoder = clip_model.visual.to(self.device)
        clip_model.visual = nn.Identity()  # the text tower stays on the CPU; only its features are kept
        logit_scale = settings["logit_scale"]
        self.logit_scale = float(logit_scale if logit_scale is not None else clip_model.logit_scale.exp().item())
        # SigLIP's models carry a learned logit bias (CLIP's none): predict() adds it, as open_clip's logits do;
        # MMS is a softmax over classes, where one constant added to every logit cancels
        bias = getattr(clip_model, "logit_bias", None)
        self.logit_bias = 0.0 if bias is None else float(bias.item())
        self.image_size = image_size_of(self.image_encoder)
        self.input_adapter = InputAdapter(self.image_input, settings["input_mean"],
                                          settings["input_std"]).to(self.device)
        self.prompt_encoder = PromptEncoder(clip_model, tokenizer, self.config["templates"], self._authors_arithmetic)
        self.class_names = []
        self.text_features = None
        self.set_class_names(class_names)
        self.step = 0
        self.model = self.trained_module(self.image_encoder)

        self.averager = self.training_step = self.optimizer = self.scheduler = None
        self._train_encoder, self._ranks = self.model, 1  # what update() runs forward and backward
        self._compiled_encoder = None
        if not zero_shot:
            # views into one buffer per dtype, before DDP, the optimizer and the averager take the tensors: BMA's
            # fold is then one kernel per buffer (flat_weights.py)
            flatten(self.model)
            # DDP first: it broadcasts rank 0's weights, which the averager then copies as theta_0
            self._train_encoder = distributed.data_parallel(self.model, self.device)
            if self._train_encoder is not self.model:
                self._ranks = torch.distributed.get_world_size()
            self.training_step = TrainingStep(self.model, self.precision, lr, weight_decay,
                                              settings["max_consecutive_skips"])
            self.optimizer = self.training_step.optimizer
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=int(total_steps))
            self.averager = build_averager(settings["averaging"], self.model, int(total_steps), settings["beta"],
                                           settings["ema_decay"], authors_fold=self._authors_arithmetic,
                                           swad={key.removeprefix("swad_"): value for key, value in settings.items()
                                                 if key.startswith("swad_")})
            compile_mode = _compile_mode(settings["compile"], self.device, self._ranks)
            if compile_mode is not None:
                self._compiled_encoder = torch.compile(self._train_encoder, mode=compile_mode)

    def trained_module(self, image_encoder):
        """The module trained and averaged on ``image_encoder``: the encoder itself (text head), or the encoder
        with a linear head initialized as the zero-shot classifier of the current class text features."""
        if self.config["head"] == "text":
            return image_encoder
        return LinearHeadClassifier(image_encoder, self.text_features, self.logit_scale, self.logit_bias)

    # ----------------------------------------------------------------- classes
    def set_class_names(self, class_names):
        """Re-encode the class text features (e.g. to evaluate on classes never trained on)."""
        features = self.prompt_encoder.encode(class_names, device=self.device)  # checks the names first
        class_names = list(class_names)
        if self.config["head"] == "linear" and self.class_names and class_names != self.class_names:
            raise ValueError("a linear head classifies only the classes it was built with; to classify others "
                             "(open classes) use head='text', whose classifier is the class names' text features")
        self.text_features = features.to(self.device)
        self.class_names = class_names

    @property
    def num_classes(self):
        return len(self.class_names)

    # ----------------------------------------------------------------- compute
    def _autocast(self):
        return autocast(self.precision, self.device)

    @property
    def inference_encoder(self):
        """The module ``predict`` uses: the averaged one when averaging is on (with a linear head: encoder and head)."""
        return self.averager.module if self.averager is not None else self.model

    def update(self, images, labels):
        """One optimizer step on a batch (``images``: uint8 pixels or normalized floats [B, C (1-3), H, W], see
        the class doc); returns loss, acc (training batch), lr, bma_weight (floats) and skipped, the number of
        steps so far whose loss or gradients were not finite.

        Such a step changes no weight (see TrainingStep); TrainingDivergedError ends a run in which
        ``max_consecutive_skips`` steps in a row were skipped, and LearnedNothingError (one of them) a run
        that skipped every step from the first, or more than half of its steps by its last one."""
        if self.config["zero_shot"]:
            raise RuntimeError("this learner was built with zero_shot=True and does not train")
        if self.step >= self.config["total_steps"]:
            raise RuntimeError(f"all total_steps={self.config['total_steps']} steps are done; build the learner "
                               "with the number of steps the run really makes")
        if self.averager is not None and self.averager.step != self.step:
            raise RuntimeError("this learner was loaded from an inference-only checkpoint; to train on, load one "
                               "saved with state_dict(include_training_state=True)")
        _check_images(images)
        _check_labels(labels, len(images), self.num_classes)  # before the copy: no device sync for CPU labels
        labels = labels.to(self.device, torch.long, non_blocking=True)
        images = self._encoder_input(images)
        self._train_encoder.eval()  # normalization layers keep their pretrained statistics (as in the paper)
        lr = self.scheduler.get_last_lr()[0]
        self.training_step.zero_grad()
        compiled = self._compiled_encoder
        try:
            encoder = self._train_encoder if compiled is None else compiled
            loss, outputs, count = self._forward_backward(encoder, images, labels)
        except Exception as error:  # any compiler failure: the uncompiled step is always valid
            if compiled is None:
                raise
            warnings.warn(f"torch.compile of the image encoder failed ({type(error).__name__}: {error}); training "
                          "goes on uncompiled (compile='off' skips the attempt)", stacklevel=2)
            self._compiled_encoder = None
            self.training_step.zero_grad()
            loss, outputs, count = self._forward_backward(self._train_encoder, images, labels)
        skipped = self.training_step.step(loss)
        # A skipped step is still a step of the run: the weights stay theta_{t-1}, the schedule advances and
        # the averager folds those unchanged, finite weights in as theta_t. So the cosine schedule and the
        # BMA weights a_t stay functions of t over total_steps, and the run ends at total_steps as planned.
        self.scheduler.step()
        self.step += 1
        if self.averager is not None:
            self.averager.update(self.model)
        with torch.no_grad():
            correct = self._logits(outputs).argmax(dim=1) == labels
            if self._ranks == 1:
                values = torch.stack([loss.detach().float(), correct.float().mean(), skipped])
            else:  # the global batch's: the loss above is already divided by the global count
                totals = distributed.all_reduce_sum(torch.stack([loss.detach().float() / self._ranks,
                                                                 correct.sum().float()]))
                values = torch.stack([totals[0], totals[1] / count, skipped])
            loss, acc, skipped = values.tolist()  # the step's one read from the device
        self.training_step.record(skipped, self.step, self.config["total_steps"])
        return {"loss": loss, "acc": acc, "lr": lr, "bma_weight": self.averaging_weight,
                "skipped": self.training_step.skipped}

    def _forward_backward(self, model, images, labels):
        """Forward under autocast, loss, backward; returns (loss, model outputs, global image count or None)."""
        with self._autocast():
            outputs = model(images)
        count = None
        if self._ranks == 1:
            loss = self._loss(outputs, labels)
        else:  # DDP averages gradients over ranks; ranks x local sum / global count makes it the global mean
            count = distributed.all_reduce_sum(torch.tensor(float(len(labels)), device=self.device))
            loss = self._loss(outputs, labels, reduction="sum") * (self._ranks / count)
        self.training_step.backward(loss)
        return loss, outputs, count

    def _loss(self, outputs, labels, reduction="mean"):
        """MMS or its margin ablations against the text features (Eq. 2-4); plain cross-entropy for a linear head."""
        if self.config["head"] == "linear":
            return F.cross_entropy(outputs, labels, reduction=reduction)
        return margin_metric_softmax(outputs, self.text_features, labels, self.config["margin"], self.logit_scale,
                                     reduction, self.config["margin_kind"], self._authors_arithmetic)

    def _logits(self, outputs):
        """Logits [B, C] from the trained module's outputs: image features (text head: ``s * cos + b``, open_clip's
        logits, with ``b`` the model's logit bias, 0 for CLIP) or logits (linear head)."""
        if self.config["head"] == "linear":
            return outputs.float()
        return self.logit_scale * F.normalize(outputs.float(), dim=-1) @ self.text_features.float().T + self.logit_bias

    @property
    def averaging_weight(self):
        """Unnormalized weight a_t of the latest weights in the average (1.0 without averaging)."""
        return getattr(self.averager, "weight", 1.0)

    @property
    def validation_due(self):
        """Whether the averaging needs the validation loss of the current weights (``validate``) before the next
        update: SWAD at its evaluation steps."""
        return getattr(self.averager, "validation_due", False)

    @torch.no_grad()
    def validate(self, domains):
        """Record SWAD's validation loss (its evaluator's ``tr_outloss``): the mean over training domains of the
        current weights' mean cross-entropy on each one's held-out batches. ``domains``: one iterable of
        (images, labels) per training domain. Distributed, each rank passes its share; the sums are global."""
        if not self.validation_due:
            raise RuntimeError(f"no validation loss is due at step {self.step} "
                               f"(averaging {self.config['averaging']!r})")
        sums = torch.zeros(len(domains), 2, dtype=torch.float64, device=self.device)
        for i, batches in enumerate(domains):
            for images, labels in batches:
                logits = self.predict(images, averaged=False)
                sums[i, 0] += F.cross_entropy(logits, labels.to(self.device), reduction="sum").double()
                sums[i, 1] += len(labels)
        sums = distributed.all_reduce_sum(sums)
        held_out = sums[:, 1] > 0
        if not held_out.any():
            raise ValueError("SWAD's validation got no held-out image of any training domain")
        loss = (sums[held_out, 0] / sums[held_out, 1]).mean().item()
        self.averager.record_validation_loss(loss)
        return loss

    @torch.no_grad()
    def _run(self, module, images):
        _check_images(images)
        module.eval()
        with self._autocast():
            return module(self._encoder_input(images))

    def _encoder_input(self, images):
        """Images on the device, mapped to CLIP's input, in the dtype the encoder takes them in. uint8 pixels are
        copied as they are (one byte per channel) and normalized there."""
        dtype = torch.uint8 if images.dtype == torch.uint8 else torch.float32
        images = self.input_adapter(images.to(self.device, dtype, non_blocking=True))
        return images.to(input_dtype(self.precision))

    @torch.no_grad()
    def predict(self, images, averaged=True):
        """Logits [B, C] against the current class names; from the averaged model unless averaged=False.
        ``images``: uint8 pixels or normalized floats [B, C (1-3), H, W] (see the class doc).

        They are open_clip's: ``logit_scale * cosine(image, class text) + logit_bias``, where the bias is that of
        SigLIP's models (sigmoid(logits) are their per-class probabilities) and 0 for CLIP's (softmax(logits))."""
        return self._logits(self._run(self.inference_encoder if averaged else self.model, images))

    # ----------------------------------------------------------------- state
    def state_dict(self, include_training_state=True):
        """Everything to predict again (config, classes, text features, inference encoder); with
        ``include_training_state`` also what an exact resume needs (live weights, averager, optimizer, loss
        scale and skip counts, schedule). The text tower is never saved: it is frozen and comes from
        ``pretrained``."""
        state = {"format": CHECKPOINT_FORMAT, "config": dict(self.config), "class_names": list(self.class_names),
                 "text_features": self.text_features.cpu(), "step": self.step,
                 "inference_encoder": self.inference_encoder.state_dict()}
        if include_training_state and not self.config["zero_shot"]:
            state["image_encoder"] = self.model.state_dict()  # with a linear head: encoder and head
            state["training_step"] = self.training_step.state_dict()
            state["scheduler"] = self.scheduler.state_dict()
            if self.averager is not None:
                state["averager"] = {k: v for k, v in self.averager.state_dict().items() if k != "module"}
        return state

    def load_state_dict(self, state, allow_hparam_change=False):
        """Restore what ``state_dict`` saved. All of ``state`` is checked before anything changes, so a load
        that fails leaves the learner as it was.

        A checkpoint with training state resumes its run: its number of classes must be this learner's, and
        so must its lr and weight decay unless ``allow_hparam_change`` (then training goes on with this
        learner's values, the learning rate from its cosine schedule at the checkpoint's step, and a warning
        says so). An inference-only checkpoint is a predictor for the class names it carries; call
        ``set_class_names`` after loading to evaluate it on others."""
        changed = check_loadable(self, state, allow_hparam_change)
        if "image_encoder" in state:
            if self.averager is not None:  # first: it checks its own settings (beta, horizon) before it changes
                self.averager.load_state_dict({**state["averager"], "module": state["inference_encoder"]})
            self.model.load_state_dict(state["image_encoder"])
            self.training_step.load_state_dict(state["training_step"])
            self.scheduler.load_state_dict(state["scheduler"])
            if changed:
                self._continue_with_own_hparams(state["config"], changed)
        else:  # an inference-only checkpoint: no further training from it
            self.inference_encoder.load_state_dict(state["inference_encoder"])
            if self.averager is not None:
                self.model.load_state_dict(state["inference_encoder"])
        self.class_names = list(state["class_names"])
        self.text_features = state["text_features"].to(self.device)
        self.step = state["step"]

    def _continue_with_own_hparams(self, trained_with, changed):
        """After loading a checkpoint trained with other TRAINING_HPARAMS: this learner's lr and weight decay,
        the learning rate where this learner's cosine schedule is at the checkpoint's step."""
        lr, weight_decay, total_steps = (self.config[key] for key in ("lr", "weight_decay", "total_steps"))
        current = lr * (1 + math.cos(math.pi * self.scheduler.last_epoch / total_steps)) / 2
        for group in self.optimizer.param_groups:
            group.update(initial_lr=lr, lr=current, weight_decay=weight_decay)
        self.scheduler.base_lrs, self.scheduler._last_lr = [lr], [current]
        warnings.warn("resuming with " + ", ".join(f"{k}={self.config[k]!r} (the checkpoint was trained with "
                                                   f"{trained_with.get(k)!r})" for k in changed)
                      + " as allow_hparam_change=True asks", stacklevel=3)


def _check_images(images):
    """Raise ValueError, saying what is expected, unless ``images`` is a non-empty uint8 or float batch
    [B, C, H, W]."""
    expected = ("images must be a tensor [batch, channels (1-3), height, width] of uint8 pixels (0-255, e.g. from "
                "the learner's preprocess_train) or of floats normalized with the learner's input_mean/input_std "
                "(e.g. by its preprocess_val)")
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{expected}; got a {type(images).__name__}")
    if images.dtype not in IMAGE_DTYPES:
        hint = "; convert with images.float()" if images.is_floating_point() else \
            "; for pixels of 0-255: images.to(torch.uint8)"
        raise ValueError(f"{expected}; got {images.dtype}, not uint8, float32, float16 or bfloat16{hint}")
    if images.ndim != 4 or images.shape[1] not in (1, 2, 3):
        raise ValueError(f"{expected}; got shape {list(images.shape)}")
    if not images.numel():
        raise ValueError(f"{expected} of at least one image; got an empty batch of shape {list(images.shape)}")


def _check_labels(labels, num_images, num_classes):
    """Raise ValueError unless ``labels`` holds one class index in [0, num_classes) per image."""
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.is_complex() \
            or labels.dtype == torch.bool or labels.shape != (num_images,):
        raise ValueError(f"labels must be an integer tensor [{num_images}] of class indices, one per image; got "
                         f"{describe(labels)}")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must be in [0, {num_classes}) for the {num_classes} class names; "
                         f"got range [{int(labels.min())}, {int(labels.max())}]")

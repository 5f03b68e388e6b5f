"""CLIPoodLearner: the one training object behind the command line and the framework adapters."""
import contextlib
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .averaging import AVERAGING_CHOICES, build_averager
from .backbone import CLIP_MEAN, CLIP_STD, InputAdapter, image_size_of, load_clip, resolve_model_name
from .loss import margin_metric_softmax
from .prompts import DEFAULT_TEMPLATES, PromptEncoder
from .settings import COMPILE_CHOICES, PRECISION_CHOICES

CHECKPOINT_FORMAT = 1
# settings a checkpoint must share with the learner that loads it (what the saved state is shaped by)
BUILD_KEYS = ("model_name", "pretrained", "averaging", "zero_shot", "total_steps")


def _resolve_precision(precision, device):
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISION_CHOICES}")
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    return "amp-bf16" if torch.cuda.is_bf16_supported() else "amp-fp16"


def _compile_mode(choice, device):
    """torch.compile's mode for the training step, or None to run it uncompiled."""
    if choice not in COMPILE_CHOICES:
        raise ValueError(f"unknown compile {choice!r}; choose one of {COMPILE_CHOICES}")
    if choice == "off" or (choice == "auto" and device.type != "cuda"):
        return None
    return "reduce-overhead" if choice == "reduce-overhead" else "default"


class CLIPoodLearner:
    """CLIP image encoder fine-tuned with Margin Metric Softmax against cached class text features,
    AdamW with a cosine schedule over ``total_steps`` on fp32 master weights, and a Beta Moving
    Average of the weight trajectory that ``predict`` uses.

    Baselines and ablations: ``margin=0`` is plain vision-language fine-tuning; ``averaging`` is
    "bma", "uniform", "ema" or "none"; ``zero_shot=True`` builds a learner that never trains.
    ``compile`` runs the training forward and backward through torch.compile ("auto": on CUDA, where
    the step is launch-bound; "reduce-overhead" also captures it in CUDA graphs); if compiling fails,
    training goes on uncompiled with a warning.
    Images given to ``update``/``predict`` may use another normalization (``input_mean``/``input_std``)
    and resolution; they are mapped to CLIP's exactly.

    Under torch.distributed (a process group of several ranks, e.g. from torchrun) ``update`` trains
    data-parallel: each rank passes its share of the global batch, DDP averages the gradients (weighted
    so that the step is the one of the whole global batch), every rank ends the step with the same
    weights and hence the same BMA copy, and the returned loss and accuracy are the global batch's.
    ``predict`` stays local to the rank.
    """

    def __init__(self, *, model_name="ViT-B-16", pretrained="openai", class_names, total_steps=None,
                 lr=5e-6, weight_decay=0.1, margin=0.3, beta=0.5, averaging="bma", ema_decay=0.999,
                 templates=DEFAULT_TEMPLATES, logit_scale=None, precision="auto", input_mean=CLIP_MEAN,
                 input_std=CLIP_STD, zero_shot=False, compile="auto", device=None):
        if averaging not in AVERAGING_CHOICES:
            raise ValueError(f"unknown averaging {averaging!r}; choose one of {AVERAGING_CHOICES}")
        if not zero_shot and (total_steps is None or int(total_steps) != total_steps or total_steps < 1):
            raise ValueError("total_steps must be the number of optimizer steps the run will make (a positive "
                             f"integer): it sets the cosine schedule and the BMA horizon; got {total_steps!r}")
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.precision = _resolve_precision(precision, self.device)
        self.config = dict(model_name=resolve_model_name(model_name), pretrained=pretrained,
                           total_steps=None if zero_shot else int(total_steps), lr=lr, weight_decay=weight_decay,
                           margin=margin, beta=beta, averaging=averaging, ema_decay=ema_decay,
                           templates=tuple([templates] if isinstance(templates, str) else templates),
                           logit_scale=logit_scale, zero_shot=zero_shot, compile=compile)

        clip_model, self.preprocess_train, self.preprocess_val, tokenizer = load_clip(model_name, pretrained)
        clip_model.eval()
        self.image_encoder = clip_model.visual.to(self.device)
        clip_model.visual = nn.Identity()  # the text tower stays on the CPU; only its features are kept
        self.logit_scale = float(logit_scale if logit_scale is not None else clip_model.logit_scale.exp().item())
        self.image_size = image_size_of(self.image_encoder)
        self.input_adapter = InputAdapter(self.image_size, input_mean, input_std).to(self.device)
        self.prompt_encoder = PromptEncoder(clip_model, tokenizer, self.config["templates"])
        self.class_names = []
        self.text_features = None
        self.set_class_names(class_names)
        self.step = 0

        self.averager = self.optimizer = self.scheduler = None
        self._train_encoder, self._ranks = self.image_encoder, 1  # what update() runs forward and backward
        self._compiled_encoder = None
        if not zero_shot:
            # DDP first: it broadcasts rank 0's weights, which the averager then copies as theta_0
            self._train_encoder = distributed.data_parallel(self.image_encoder, self.device)
            if self._train_encoder is not self.image_encoder:
                self._ranks = torch.distributed.get_world_size()
            self.optimizer = torch.optim.AdamW(self.image_encoder.parameters(), lr=lr, weight_decay=weight_decay,
                                               fused=self.device.type == "cuda")
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=int(total_steps))
            self.averager = build_averager(averaging, self.image_encoder, int(total_steps), beta, ema_decay)
            compile_mode = _compile_mode(compile, self.device)
            if compile_mode is not None:
                self._compiled_encoder = torch.compile(self._train_encoder, mode=compile_mode)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "amp-fp16")

    # ----------------------------------------------------------------- classes
    def set_class_names(self, class_names):
        """Re-encode the class text features (e.g. to evaluate on classes never trained on)."""
        class_names = list(class_names)
        self.text_features = self.prompt_encoder.encode(class_names, device=self.device).to(self.device)
        self.class_names = class_names

    @property
    def num_classes(self):
        return len(self.class_names)

    # ----------------------------------------------------------------- compute
    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "amp-bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    @property
    def inference_encoder(self):
        """The encoder ``predict`` uses: the averaged one when averaging is on."""
        return self.averager.module if self.averager is not None else self.image_encoder

    def update(self, images, labels):
        """One optimizer step on a batch; returns floats: loss, acc (training batch), lr, bma_weight."""
        if self.config["zero_shot"]:
            raise RuntimeError("this learner was built with zero_shot=True and does not train")
        if self.step >= self.config["total_steps"]:
            raise RuntimeError(f"all total_steps={self.config['total_steps']} steps are done; build the learner "
                               "with the number of steps the run really makes")
        if self.averager is not None and self.averager.step != self.step:
            raise RuntimeError("this learner was loaded from an inference-only checkpoint; to train on, load one "
                               "saved with state_dict(include_training_state=True)")
        labels = labels.to(self.device, non_blocking=True)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must be in [0, {self.num_classes}) for the {self.num_classes} class names; "
                             f"got range [{int(labels.min())}, {int(labels.max())}]")
        images = self.input_adapter(images.to(self.device, non_blocking=True))
        self._train_encoder.eval()  # normalization layers keep their pretrained statistics (as in the paper)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.zero_grad(set_to_none=True)
        compiled = self._compiled_encoder
        try:
            encoder = self._train_encoder if compiled is None else compiled
            loss, features, count = self._forward_backward(encoder, images, labels)
        except Exception as error:  # any compiler failure: the uncompiled step is always valid
            if compiled is None:
                raise
            warnings.warn(f"torch.compile of the image encoder failed ({type(error).__name__}: {error}); training "
                          "goes on uncompiled (compile='off' skips the attempt)", stacklevel=2)
            self._compiled_encoder = None
            self.optimizer.zero_grad(set_to_none=True)
            loss, features, count = self._forward_backward(self._train_encoder, images, labels)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        if self.averager is not None:
            self.averager.update(self.image_encoder)
        with torch.no_grad():
            correct = (features.float() @ self.text_features.T).argmax(dim=1) == labels
            if self._ranks == 1:
                loss, acc = loss.item(), correct.float().mean().item()
            else:  # the global batch's: the loss above is already divided by the global count
                totals = distributed.all_reduce_sum(torch.stack([loss.detach().float() / self._ranks,
                                                                 correct.sum().float()]))
                loss, acc = totals[0].item(), (totals[1] / count).item()
        return {"loss": loss, "acc": acc, "lr": lr, "bma_weight": self.averaging_weight}

    def _forward_backward(self, encoder, images, labels):
        """Forward under autocast, MMS, backward; returns (loss, features, global image count or None)."""
        with self._autocast():
            features = encoder(images)
        margin, count = self.config["margin"], None
        if self._ranks == 1:
            loss = margin_metric_softmax(features, self.text_features, labels, margin, self.logit_scale)
        else:  # DDP averages gradients over ranks; ranks x local sum / global count makes it the global mean
            count = distributed.all_reduce_sum(torch.tensor(float(len(labels)), device=self.device))
            loss = margin_metric_softmax(features, self.text_features, labels, margin, self.logit_scale,
                                         reduction="sum") * (self._ranks / count)
        self.scaler.scale(loss).backward()
        return loss, features, count

    @property
    def averaging_weight(self):
        """Unnormalized weight a_t of the latest weights in the average (1.0 without averaging)."""
        return getattr(self.averager, "weight", 1.0)

    @torch.no_grad()
    def encode_images(self, images, averaged=True):
        """L2-normalized image features [B, D] (fp32)."""
        encoder = self.inference_encoder if averaged else self.image_encoder
        encoder.eval()
        with self._autocast():
            features = encoder(self.input_adapter(images.to(self.device, non_blocking=True)))
        return F.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def predict(self, images, averaged=True):
        """Logits [B, C] against the current class names; from the averaged model unless averaged=False."""
        return self.logit_scale * self.encode_images(images, averaged) @ self.text_features.T

    # ----------------------------------------------------------------- state
    def state_dict(self, include_training_state=True):
        """Everything to predict again (config, classes, text features, inference encoder); with
        ``include_training_state`` also what an exact resume needs (live weights, averager, optimizer,
        schedule, scaler). The text tower is never saved: it is frozen and comes from ``pretrained``."""
        state = {"format": CHECKPOINT_FORMAT, "config": dict(self.config), "class_names": list(self.class_names),
                 "text_features": self.text_features.cpu(), "step": self.step,
                 "inference_encoder": self.inference_encoder.state_dict()}
        if include_training_state and not self.config["zero_shot"]:
            state["image_encoder"] = self.image_encoder.state_dict()
            state["optimizer"] = self.optimizer.state_dict()
            state["scheduler"] = self.scheduler.state_dict()
            state["scaler"] = self.scaler.state_dict()
            if self.averager is not None:
                state["averager"] = {k: v for k, v in self.averager.state_dict().items() if k != "module"}
        return state

    def load_state_dict(self, state):
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a CLIPoodLearner checkpoint of format {CHECKPOINT_FORMAT}")
        mine, theirs = self.config, state["config"]
        for key in BUILD_KEYS:
            if mine[key] != theirs[key]:
                raise ValueError(f"checkpoint has {key}={theirs[key]!r} but this learner was built with "
                                 f"{key}={mine[key]!r}; rebuild it with the checkpoint's config")
        self.class_names = list(state["class_names"])
        self.text_features = state["text_features"].to(self.device)
        self.step = state["step"]
        if "image_encoder" in state:
            self.image_encoder.load_state_dict(state["image_encoder"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            if self.averager is not None:
                self.averager.load_state_dict({**state["averager"], "module": state["inference_encoder"]})
        else:  # an inference-only checkpoint: no further training from it
            self.inference_encoder.load_state_dict(state["inference_encoder"])
            if self.averager is not None:
                self.image_encoder.load_state_dict(state["inference_encoder"])

"""The settings of a `clipood train` run, the allowed values of the core's options, and the error for bad
input. Importable without torch: the command line parses and checks its arguments before it loads torch
and open_clip, so that --help and a bad argument answer at once."""
import math
import os
from dataclasses import dataclass, field

TINY_MODEL = "clipood-tiny"  # the tiny random-init CLIP that runs offline
# "authors-fp16": the numerics of the authors' code, under which the paper's learning rates were tuned (fp16
# weights and BMA copy, an fp32 round trip around AdamW; see training_step.py)
PRECISION_CHOICES = ("auto", "fp32", "amp-bf16", "amp-fp16", "authors-fp16")
# torch.compile of the training forward/backward: auto = "on" on CUDA; reduce-overhead adds CUDA graphs
COMPILE_CHOICES = ("auto", "on", "reduce-overhead", "off")
AVERAGING_CHOICES = ("bma", "uniform", "ema", "none")
# the margin of each wrong class: lam * D(T_y, T_c) (MMS), lam for every one, or none (plain metric softmax)
MARGIN_KINDS = ("adaptive", "fixed", "none")
# the classifier: cosine similarity to the frozen class text features (Eq. 2), or a trained linear layer (Eq. 1)
HEAD_CHOICES = ("text", "linear")
DECODE_CHOICES = ("cpu", "device")  # where training images are decoded and augmented
# A random-init model (clipood-tiny, pretrained none) learns from scratch: below RANDOM_INIT_MIN_LR (e.g. the
# paper's fine-tuning rate 5e-6) it barely moves in a run's steps; clipood demo trains it at RANDOM_INIT_LR.
RANDOM_INIT_MIN_LR = 1e-4
RANDOM_INIT_LR = 2e-3


class DataError(Exception):
    """Bad input (data, files, settings), reported to the user as one line rather than a traceback."""

    def __init__(self, message=""):
        # a DataLoader re-raises a worker's error with the worker's whole traceback as its message
        if message.startswith(f"Caught {type(self).__name__}"):
            message = message.rstrip().rsplit(f"{type(self).__name__}: ", 1)[-1]
        super().__init__(message)


@dataclass
class TrainConfig:
    """Defaults are the paper's domain-shift settings (PACS: lr 5e-6, 10 epochs x 500 iterations)."""
    data_dir: str = field(default=None, metadata={"help": "ROOT of ROOT/<domain>/<class>/<image>"})
    test_domains: list = field(default=None, metadata={"help": "domain folder name(s) held out for testing"})
    output_dir: str = field(default="./clipood_output", metadata={"help": "results.json, results.png, model.pt, checkpoint.pt"})
    model: str = field(default="ViT-B-16", metadata={"help": "open_clip model name, CoOp-style name, or clipood-tiny"})
    pretrained: str = field(default="openai", metadata={"help": "open_clip tag, local checkpoint file, or 'none' (random init)"})
    templates: list = field(default_factory=lambda: ["a photo of a {}."], metadata={"help": "prompt template(s); several are ensembled"})
    steps: int = field(default=5000, metadata={"help": "optimizer steps (= BMA and cosine horizon)"})
    batch_size: int = field(default=12, metadata={"help": "images per training domain per step"})
    lr: float = field(default=5e-6, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay"})
    mms_lambda: float = field(default=0.3, metadata={"help": "MMS margin weight (0 = plain fine-tuning)"})
    margin_kind: str = field(default="adaptive", metadata={"help": "margin of each wrong class: adaptive (MMS: lambda x "
                                                                   "text distance), fixed (lambda), none",
                                                           "choices": MARGIN_KINDS})
    head: str = field(default="text", metadata={"help": "classifier: text (class text features, Eq. 2) or linear "
                                                        "(trained, initialized from them, Eq. 1; needs --margin-kind none)",
                                                "choices": HEAD_CHOICES})
    bma_beta: float = field(default=0.5, metadata={"help": "Beta(beta, beta) of the moving average"})
    averaging: str = field(default="bma", metadata={"help": "weight averaging used for prediction (uniform: the mean "
                                                            "of the weights after steps 1..T)",
                                                    "choices": AVERAGING_CHOICES})
    ema_decay: float = field(default=0.999, metadata={"help": "decay of --averaging ema"})
    precision: str = field(default="auto", metadata={"help": "auto: bf16 (else fp16) autocast on CUDA, fp32 elsewhere; "
                                                             "authors-fp16: the reference code's fp16 weights and BMA",
                                                     "choices": PRECISION_CHOICES})
    compile: str = field(default="auto", metadata={"help": "torch.compile the training step: auto (on CUDA), on, "
                                                           "reduce-overhead (with CUDA graphs), off",
                                                   "choices": COMPILE_CHOICES})
    decode: str = field(default="cpu", metadata={"help": "where training JPEGs are decoded and augmented: cpu (PIL in "
                                                         "the loader processes) or device (in batch on the training "
                                                         "device, nvJPEG on CUDA; for fast GPUs)",
                                                 "choices": DECODE_CHOICES})
    holdout_fraction: float = field(default=0.2, metadata={"help": "share of each training domain kept for validation"})
    eval_every: int = field(default=500, metadata={"help": "evaluate every N steps"})
    checkpoint_every: int = field(default=500, metadata={"help": "save a resumable checkpoint every N steps"})
    stop_after: int = field(default=None, metadata={"help": "stop (with a checkpoint) after this many steps of this "
                                                            "command, counted from where it resumed; the same command "
                                                            "with --resume makes as many more (Slurm requeue)"})
    resume: bool = field(default=False, metadata={"help": "continue from OUTPUT_DIR/checkpoint.pt"})
    overwrite: bool = field(default=False, metadata={"help": "start over in an OUTPUT_DIR that holds a finished or "
                                                             "unfinished run, deleting its results and checkpoint"})
    allow_missing_classes: bool = field(default=False, metadata={"help": "accept domains that lack some classes"})
    workers: int = field(default=min(4, os.cpu_count() or 1), metadata={"help": "data loading processes per domain"})
    eval_batch_size: int = field(default=128, metadata={"help": "batch size for evaluation"})
    seed: int = field(default=0, metadata={"help": "seed of the data order, augmentation and holdout split"})
    device: str = field(default=None, metadata={"help": "cuda, cpu, ... (default: cuda when available; under "
                                                         "torchrun each process takes cuda:LOCAL_RANK)"})

    # fields that may change between an interrupted run and its resumption
    RESUMABLE_CHANGES = ("output_dir", "stop_after", "resume", "overwrite", "workers", "eval_batch_size", "device",
                         "compile", "decode")

    def check(self):
        """Raise DataError naming the flag of the first setting out of its range."""
        if not self.data_dir:
            raise DataError("give --data-dir")
        if not self.test_domains:
            raise DataError("give at least one --test-domains")
        counts = {"steps": 1, "batch_size": 1, "eval_every": 1, "checkpoint_every": 1, "eval_batch_size": 1,
                  "workers": 0, "stop_after": 1}
        for name, least in counts.items():
            value = getattr(self, name)
            if value is not None and value < least:
                raise DataError(f"{flag(name)} must be at least {least}, got {value}")
        for name, positive in (("lr", True), ("weight_decay", False), ("bma_beta", True)):
            value = getattr(self, name)
            if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
                raise DataError(f"{flag(name)} must be a finite number {'>' if positive else '>='} 0, got {value}")
        if not math.isfinite(self.mms_lambda):
            raise DataError(f"--mms-lambda must be a finite number, got {self.mms_lambda}")
        if not 0 <= self.holdout_fraction < 1:
            raise DataError(f"--holdout-fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.resume and self.overwrite:
            raise DataError("--resume continues the run in --output-dir and --overwrite starts it over: give one")


def check_device(name, option="--device"):
    """Raise DataError, in one line naming ``option``, unless ``name`` (None: the default device) is a
    device torch can use here. torch is imported on use."""
    if name is None:
        return
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DataError(f"{option} {name}: not a device name; give cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise DataError(f"{option} {name}: no CUDA GPU is visible here; give {option} cpu, or run on a machine "
                            "with a GPU")
        if device.index is not None and device.index >= count:
            raise DataError(f"{option} {name}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
        return
    try:
        torch.empty(0, device=device)
    except Exception:  # each backend raises its own type, some with a page-long message
        raise DataError(f"{option} {name}: this torch cannot use it on this machine; give {option} cpu") from None


def random_init_warning(pretrained, lr, random_init_setting, lr_setting):
    """One line warning that a model trained from random weights (``pretrained`` None or "none") gets a
    fine-tuning learning rate, or None. ``random_init_setting`` and ``lr_setting`` (a format string of a
    value) word the settings as the front end's user gives them."""
    if pretrained not in (None, "none") or lr >= RANDOM_INIT_MIN_LR:
        return None
    return (f"warning: {random_init_setting} trains from random weights, which a learning rate of {lr:g} (a "
            f"fine-tuning rate) barely moves; give a far larger one, e.g. {lr_setting.format(f'{RANDOM_INIT_LR:g}')}")


def flag(name):
    """The command-line flag of a TrainConfig field."""
    return "--" + name.replace("_", "-")

"""The one gate for settings (each setting once, as data: name, meaning, allowed values), the settings of a
`clipood train` run, and the error for bad input. Importable without torch: the command line parses and checks
its arguments before it loads torch and open_clip, so that --help and a bad argument answer at once.

Every front end passes its settings through ``check_settings`` before it builds anything, translating its own
spelling (``--mms-lambda``, DomainBed's ``mms_lambda``, Dassl's ``TRAINER.CLIPOOD.MMS_LAMBDA``) onto the names
below, so that each refusal names the setting as that front end spells it. A new setting enters the gate by
one entry in SETTINGS (and one in a front end's map of its names onto these, where it spells the setting
otherwise, as TrainConfig.CORE_NAMES does for `clipood train`)."""
import math
import numbers
import os
import string
from dataclasses import dataclass, field

from .image_input import AUTO, image_norm_problem

TINY_MODEL = "clipood-tiny"  # the tiny random-init CLIP that runs offline
# "authors-fp16": the numerics of the authors' code, under which the paper's learning rates were tuned (fp16
# weights and BMA copy, an fp32 round trip around AdamW; see training_step.py)
PRECISION_CHOICES = ("auto", "fp32", "amp-bf16", "amp-fp16", "authors-fp16")
# torch.compile of the training forward/backward: auto = reduce-overhead (CUDA graphs) on one CUDA device, "on"
# under DDP, off elsewhere (measured: docs/benchmarks.md)
COMPILE_CHOICES = ("auto", "on", "reduce-overhead", "off")
AVERAGING_CHOICES = ("bma", "uniform", "ema", "swad", "none")
# how reports name the model each averaging predicts with
AVERAGED_MODEL_NAMES = {"bma": "BMA", "uniform": "uniform", "ema": "EMA", "swad": "SWAD", "none": "last"}
# SWAD's evaluation interval, N_s, N_e and r: the SWAD authors' config.yaml and their CHECKPOINT_FREQ of PACS,
# VLCS, OfficeHome and TerraIncognita (averaging.SWAD)
SWAD_DEFAULTS = dict(swad_every=200, swad_n_converge=3, swad_n_tolerance=6, swad_tolerance_ratio=0.3)
# the margin of each wrong class: lam * D(T_y, T_c) (MMS), lam for every one, or none (plain metric softmax)
MARGIN_KINDS = ("adaptive", "fixed", "none")
# the classifier: cosine similarity to the frozen class text features (Eq. 2), or a trained linear layer (Eq. 1)
HEAD_CHOICES = ("text", "linear")
# where training images are decoded and augmented: auto = device on CUDA (where the transform allows), else cpu
DECODE_CHOICES = ("auto", "cpu", "device")
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


class SettingError(DataError, ValueError):
    """A setting outside its allowed values (a ValueError too, as the library raises for bad arguments)."""


class ChangedSettingsError(SettingError):
    """A checkpoint made with other settings than the run that loads it. ``changes``: [(core name, the
    checkpoint's value, this run's value)]; ``respelled`` words it for a front end."""

    def __init__(self, changes, advice, spelled=None):
        self.changes, self.advice = list(changes), advice
        label = spelled or (lambda name: name)
        listing = ", ".join(f"{label(name)} {saved!r} -> {now!r}" for name, saved, now in self.changes)
        super().__init__(f"the checkpoint was made with other settings than this run has (checkpoint -> now): "
                         f"{listing}; {advice}")

    def respelled(self, spelled, advice=None):
        return ChangedSettingsError(self.changes, advice or self.advice, spelled)


def changed_settings(saved, now, names):
    """[(name, saved value, value now)] for the names whose values differ (a list and a tuple of the same
    items are the same value: a checkpoint may store one where the run holds the other)."""
    def comparable(value):
        return tuple(value) if isinstance(value, list) else value
    return [(name, saved.get(name), now.get(name)) for name in names
            if comparable(saved.get(name)) != comparable(now.get(name))]


@dataclass(frozen=True)
class Setting:
    """One setting: its core name (CLIPoodLearner's argument; a `clipood train` field for run-only ones), what
    it means, and ``problem(value)``: what is wrong with a value ("must be ..."), or None when it is allowed.
    ``trains``: it only matters to a learner that trains (a zero-shot one ignores it)."""
    name: str
    meaning: str
    problem: object
    trains: bool = False


def _shown(value):
    return f"the string {value!r}" if isinstance(value, str) else repr(value)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _number(low=None, high=None, low_open=False, high_open=False, optional=False):
    """A real number (not a string, not a bool), finite, within the bounds given (open bounds excluded)."""
    if low is not None and high is not None:
        bounds = f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        bounds = f" {'>' if low_open else '>='} {low:g}"
    else:
        bounds = ""
    wanted = f"must be a finite number{bounds}" + (" (or null/None)" if optional else "")

    def problem(value):
        if value is None and optional:
            return None
        if not _is_number(value) or not math.isfinite(value):
            return wanted
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        return wanted if below or above else None
    return problem


def _count(least, optional=False):
    """A whole number >= least (an int, not a float such as 8.0, not a bool)."""
    def problem(value):
        if value is None and optional:
            return None
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < least:
            return f"must be a whole number >= {least}" + (" (or null/None)" if optional else "")
        return None
    return problem


def _choice(choices):
    return lambda value: None if isinstance(value, str) and value in choices else f"must be one of {choices}"


def _flag(value):
    return None if isinstance(value, bool) else "must be true or false"


# named template sets, given in place of the templates (prompts.TEMPLATE_PRESETS expands them): OpenAI's 80
# ImageNet prompts, the ensemble of CLIP's zero-shot ImageNet results
TEMPLATE_PRESET_NAMES = ("openai_imagenet",)
ONE_FIELD = ("must each hold exactly one positional '{}' for the class name and no other field (no '{name}', "
             "no '{0}'; a literal brace is written '{{' or '}}'), or be one named set: "
             + ", ".join(TEMPLATE_PRESET_NAMES))


def _has_one_positional_field(template):
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError:  # an unmatched brace
        return False
    return fields == [("", "", None)]


def _templates(value):
    templates = [value] if isinstance(value, str) else value
    if not isinstance(templates, (list, tuple)) or not templates:
        return f"must be one prompt template, a non-empty list of them, or one of {TEMPLATE_PRESET_NAMES}"
    if len(templates) == 1 and templates[0] in TEMPLATE_PRESET_NAMES:
        return None
    if not all(isinstance(template, str) and _has_one_positional_field(template) for template in templates):
        return ONE_FIELD
    return None


def _channel_values(positive):
    wanted = (f"3 finite numbers{' > 0' if positive else ''}, one per color channel (R, G, B) (or null/None: the "
              "model's own)")

    def problem(value):
        if value is None:
            return None
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
                _is_number(v) and math.isfinite(v) and (v > 0 or not positive) for v in value):
            return f"must be {wanted}"
        return None
    return problem


def _alphas(value):
    listed = isinstance(value, (list, tuple)) and value
    if listed and all(_is_number(alpha) and math.isfinite(alpha) and 0 <= alpha <= 1 for alpha in value) \
            and len(set(value)) == len(value):
        return None
    return "must be a non-empty list of distinct finite numbers in [0, 1]"


def _class_names(value):
    if isinstance(value, (str, bytes)):
        return "must be a list of names, not one string (it would be read as one class per character)"
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(name, str) for name in value):
        return "must be a non-empty list of strings"
    return None


SETTINGS = {setting.name: setting for setting in [
    Setting("lr", "the AdamW learning rate", _number(0, low_open=True), trains=True),
    Setting("weight_decay", "the AdamW weight decay", _number(0), trains=True),
    Setting("margin", "the MMS margin weight lambda, 0 for plain fine-tuning", _number(0), trains=True),
    Setting("margin_kind", "the margin of each wrong class", _choice(MARGIN_KINDS), trains=True),
    Setting("head", "the classifier", _choice(HEAD_CHOICES)),
    Setting("beta", "the Beta(beta, beta) weighting of the moving average", _number(0, low_open=True), trains=True),
    Setting("averaging", "the weight averaging used for prediction", _choice(AVERAGING_CHOICES), trains=True),
    Setting("ema_decay", "the decay of the EMA averaging", _number(0, 1, high_open=True), trains=True),
    Setting("swad_every", "the steps between SWAD's validation losses", _count(1), trains=True),
    Setting("swad_n_converge", "SWAD's N_s: the validation losses in which the first must be the least to start "
            "the window", _count(1), trains=True),
    Setting("swad_n_tolerance", "SWAD's N_e: the validation losses of which one must stay under the threshold "
            "to go on averaging", _count(1), trains=True),
    Setting("swad_tolerance_ratio", "SWAD's r: the threshold is (1 + r) x the mean loss at the window's start",
            _number(0), trains=True),
    Setting("templates", "the prompt template(s)", _templates),
    Setting("class_names", "the class names, in label order", _class_names),
    Setting("logit_scale", "the temperature of the logits, None for the model's",
            _number(0, low_open=True, optional=True)),
    Setting("precision", "the training numerics", _choice(PRECISION_CHOICES)),
    Setting("compile", "torch.compile of the training step", _choice(COMPILE_CHOICES), trains=True),
    Setting("image_norm", "the input (normalization, resize) of weights that do not describe theirs (a local file, "
            "random init)", image_norm_problem),
    Setting("input_mean", "the per-channel mean the input images are normalized with", _channel_values(False)),
    Setting("input_std", "the per-channel std the input images are normalized with", _channel_values(True)),
    Setting("total_steps", "the number of optimizer steps, the cosine and averaging horizon", _count(1), trains=True),
    Setting("max_consecutive_skips", "the non-finite steps in a row that end a run", _count(1), trains=True),
    Setting("zero_shot", "whether the learner never trains", _flag),
    Setting("open_class_ratio", "the share of classes held out of training as new classes",
            _number(0, 1, high_open=True)),
    # run settings of the front ends (the learner never sees them)
    Setting("batch_size", "the images per training domain per step", _count(1)),
    Setting("eval_batch_size", "the batch size of evaluation", _count(1)),
    Setting("eval_every", "the steps between evaluations", _count(1)),
    Setting("checkpoint_every", "the steps between checkpoints", _count(1)),
    Setting("stop_after", "the step to stop at with a checkpoint", _count(1, optional=True)),
    Setting("workers", "the data loading processes per domain", _count(0)),
    Setting("holdout_fraction", "the share of each training domain kept for validation", _number(0, 1, high_open=True)),
    Setting("decode", "where training images are decoded", _choice(DECODE_CHOICES)),
    # an evaluation of a finished model (clipood_plugin.wise_ft)
    Setting("wise_ft_alphas", "WiSE-FT's weights alpha of (1 - alpha) pretrained + alpha fine-tuned", _alphas),
]}


def check_settings(values, spelled=None, training=True):
    """Raise SettingError, naming the first setting out of its allowed values as ``spelled(name)`` gives it
    (default: the core name), what it must be, the value given and its meaning. ``values``: {core name: value};
    with ``training`` False the settings that only matter to training are not checked."""
    for name, value in values.items():
        setting = SETTINGS[name]
        problem = None if setting.trains and not training else setting.problem(value)
        if problem:
            label = spelled(name) if spelled else name
            raise SettingError(f"{label} {problem}, got {_shown(value)} ({label}: {setting.meaning})")


@dataclass
class TrainConfig:
    """Defaults are the paper's domain-shift settings (PACS: lr 5e-6, 10 epochs x 500 iterations)."""
    data_dir: str = field(default=None, metadata={"help": "ROOT of ROOT/<domain>/<class>/<image>"})
    test_domains: list = field(default=None, metadata={"help": "domain folder name(s) held out for testing"})
    output_dir: str = field(default="./clipood_output", metadata={"help": "results.json, results.png, model.pt, checkpoint.pt"})
    model: str = field(default="ViT-B-16", metadata={"help": "open_clip model name, CoOp-style name, or clipood-tiny"})
    pretrained: str = field(default="openai", metadata={"help": "open_clip tag, local checkpoint file, or 'none' (random init)"})
    image_norm: str = field(default=AUTO, metadata={"help": "the input of weights that do not describe theirs (a "
                                                            "local file, random init): openai, siglip, imagenet, "
                                                            "M,M,M:S,S,S (mean:std) or MODEL/TAG (a tag's); auto: "
                                                            "a tag's or export's own, else openai"})
    templates: list = field(default_factory=lambda: ["a photo of a {}."], metadata={
        "help": "prompt template(s); several are ensembled; openai_imagenet: OpenAI's 80 ImageNet templates"})
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
                                                            "of the weights after steps 1..T; swad: dense averaging "
                                                            "over the window of low holdout loss)",
                                                    "choices": AVERAGING_CHOICES})
    ema_decay: float = field(default=0.999, metadata={"help": "decay of --averaging ema"})
    swad_every: int = field(default=SWAD_DEFAULTS["swad_every"], metadata={
        "help": "--averaging swad: steps between validation losses on the holdout (SWAD's evaluation interval)"})
    swad_n_converge: int = field(default=SWAD_DEFAULTS["swad_n_converge"], metadata={
        "help": "--averaging swad: N_s, the losses in which the first must be the least to start the window"})
    swad_n_tolerance: int = field(default=SWAD_DEFAULTS["swad_n_tolerance"], metadata={
        "help": "--averaging swad: N_e, the losses of which one must stay under the threshold to go on averaging"})
    swad_tolerance_ratio: float = field(default=SWAD_DEFAULTS["swad_tolerance_ratio"], metadata={
        "help": "--averaging swad: r, the threshold is (1 + r) x the mean loss at the window's start"})
    precision: str = field(default="auto", metadata={"help": "auto: bf16 (else fp16) autocast on CUDA, fp32 elsewhere; "
                                                             "authors-fp16: the reference code's fp16 weights and BMA",
                                                     "choices": PRECISION_CHOICES})
    compile: str = field(default="auto", metadata={"help": "torch.compile the training step: auto (on CUDA, with CUDA graphs), on, "
                                                           "reduce-overhead (with CUDA graphs), off",
                                                   "choices": COMPILE_CHOICES})
    decode: str = field(default="auto", metadata={"help": "where training JPEGs are decoded and augmented: cpu (PIL in "
                                                          "the loader processes), device (in batch on the training "
                                                          "device, nvJPEG on CUDA), auto (device on CUDA, else cpu)",
                                                  "choices": DECODE_CHOICES})
    holdout_fraction: float = field(default=0.2, metadata={"help": "share of each training domain kept for validation"})
    wise_ft: str = field(default=None, metadata={"help": "ALPHAS, e.g. 0,0.25,0.5,0.75,1: at the end also evaluate WiSE-FT "
                                                         "(1 - alpha) x the starting weights + alpha x the model's, "
                                                         "and pick the alpha best on the holdout"})
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

    # the core name of each field that has another one (the other fields have the core's names)
    CORE_NAMES = {"mms_lambda": "margin", "bma_beta": "beta", "steps": "total_steps"}
    # fields that may change between an interrupted run and its resumption
    RESUMABLE_CHANGES = ("output_dir", "stop_after", "resume", "overwrite", "workers", "eval_batch_size", "device",
                         "compile", "decode", "wise_ft")

    def check(self):
        """Raise DataError naming the flag of the first setting out of its range."""
        if not self.data_dir:
            raise DataError("give --data-dir")
        if not self.test_domains:
            raise DataError("give at least one --test-domains")
        fields = {f: getattr(self, f) for f in self.__dataclass_fields__}
        check_settings({self.CORE_NAMES.get(f, f): value for f, value in fields.items()
                        if self.CORE_NAMES.get(f, f) in SETTINGS}, spelled=self.flag_of)
        if self.wise_ft is not None:
            check_settings({"wise_ft_alphas": alphas_of(self.wise_ft, "--wise-ft")}, spelled=lambda _: "--wise-ft")
        if self.averaging == "swad" and not self.holdout_fraction:
            raise SettingError("--averaging swad finds its window from the loss on held-out images of the training "
                               "domains: give --holdout-fraction > 0 (e.g. 0.2)")
        if self.resume and self.overwrite:
            raise DataError("--resume continues the run in --output-dir and --overwrite starts it over: give one")

    @classmethod
    def flag_of(cls, core_name):
        """The command-line flag of the field that holds the core setting ``core_name``."""
        fields = {core: f for f, core in cls.CORE_NAMES.items()}
        return flag(fields.get(core_name, core_name))


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


def alphas_of(listed, option):
    """The numbers of a comma-separated list such as WiSE-FT's alphas (check_settings checks their range)."""
    try:
        return [float(part) for part in listed.split(",")]
    except ValueError:
        raise DataError(f"{option} takes comma-separated numbers, e.g. 0,0.25,0.5,0.75,1; got {listed!r}") from None


def flag(name):
    """The command-line flag of a TrainConfig field."""
    return "--" + name.replace("_", "-")

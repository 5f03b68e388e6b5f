"""The one settings table and its gate. Every setting is one ``Setting`` below: its type, range, default and
meaning, how it behaves when a run resumes, and its spelling in each front end (the `clipood train` field, the
DomainBed hparam, the Dassl config key). From the table come CLIPoodLearner's defaults and config, `clipood
train`'s flags (train_config.TrainConfig), DomainBed's hparams entries, Dassl's TRAINER.CLIPOOD node, and the one
resume policy; a new setting is one entry here plus the code that uses it (docs/contributing.md).

Every front end passes its settings through ``check_settings`` (each setting's range) and ``check_rules`` (the
rules that tie settings together) before it builds anything, with its own spelling of their names, so that each
refusal names the setting as that front end's user sets it. Importable without torch: the command line checks its
arguments before it loads torch and open_clip, so that --help and a bad argument answer at once."""
import math
import numbers
import os
import re
import string
from dataclasses import dataclass

from .errors import ChangedSettingsError, DataError, SettingError  # noqa: F401 (their old import path)
from .cuda_driver import cuda_device_count
from .image_input import AUTO, IMAGE_NORMS, MIN_STD, STD_TOO_SMALL, image_norm_problem

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
# the margin of each wrong class: lam * D(T_y, T_c) (MMS), lam for every one, or none (plain metric softmax)
MARGIN_KINDS = ("adaptive", "fixed", "none")
# the classifier: cosine similarity to the frozen class text features (Eq. 2), or a trained linear layer (Eq. 1)
HEAD_CHOICES = ("text", "linear")
# where training images are decoded and augmented: auto = device on CUDA (where the transform allows), else cpu
DECODE_CHOICES = ("auto", "cpu", "device")
# the most optimizer steps a run may be built for (far beyond any paper run; a typo such as 99999999999999 is not)
MAX_STEPS = 10_000_000
# A random-init model (clipood-tiny, pretrained none) learns from scratch: below RANDOM_INIT_MIN_LR (e.g. the
# paper's fine-tuning rate 5e-6) it barely moves in a run's steps; clipood demo trains it at RANDOM_INIT_LR.
RANDOM_INIT_MIN_LR = 1e-4
RANDOM_INIT_LR = 2e-3

# How a setting behaves when a run resumes from a checkpoint:
BUILD = "build"  # it shapes the saved state: a checkpoint must share it to be loaded at all
TRAJECTORY = "trajectory"  # it shapes the run: a checkpoint with training state must share it to resume
HPARAM = "hparam"  # a training hyperparameter: it may change on resume where the user asks (allow_hparam_change)
FREE = "free"  # it may change freely (where the run happens, how fast, what is reported)
# Whether CLIPoodLearner takes it: as an argument recorded in its ``config`` (and checkpoints), or one it is not
CONFIG = "config"
ARGUMENT = "argument"
# ``unrecorded``: what a checkpoint saved before the setting was recorded had; COMPARED_WHEN_RECORDED: such a
# checkpoint had the only behaviour there was, so it is compared only where recorded
RECORDED = "recorded"
COMPARED_WHEN_RECORDED = "compared when recorded"
REQUIRED = "required"  # a setting without a default: each front end gives it


@dataclass(frozen=True)
class Setting:
    """One setting: its core name (CLIPoodLearner's argument; a run setting of the front ends otherwise), what
    it means, and ``problem(value)``: what is wrong with a value ("must be ..."), or None when it is allowed;
    its ``default`` and how it behaves on ``resume`` (BUILD, TRAJECTORY, HPARAM, FREE); ``trains``: it only
    matters to a learner that trains (a zero-shot one ignores it); ``learner``: CONFIG, ARGUMENT or None.
    Its spelling in each front end, None where that front end does not set it: ``flag``, the field of `clipood
    train`'s TrainConfig (its flag: --field-name) with ``help`` (default: the meaning) and ``kind`` (the
    field's type; default: the default's); ``hparam``, the DomainBed hparam; ``config_key``, the Dassl config key.
    ``unrecorded``: see RECORDED."""
    name: str
    meaning: str
    problem: object
    default: object = REQUIRED
    resume: str = FREE
    trains: bool = False
    learner: object = None
    flag: object = None
    hparam: object = None
    config_key: object = None
    help: object = None
    kind: object = None
    unrecorded: object = RECORDED

    @property
    def choices(self):
        return getattr(self.problem, "choices", None)


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


def _count(least, most=None, optional=False):
    """A whole number >= least, and <= most where given (an int, not a float such as 8.0, not a bool)."""
    wanted = f"must be a whole number >= {least}" + (" (or null/None)" if optional else "")

    def problem(value):
        if value is None and optional:
            return None
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < least:
            return wanted
        if most is not None and value > most:
            return f"must be a whole number >= {least} and <= {most:,}"
        return None
    return problem


def _choice(choices):
    def problem(value):
        return None if isinstance(value, str) and value in choices else f"must be one of {choices}"
    problem.choices = choices  # the choices a command-line flag offers
    return problem


def _text(value):
    return None if value is None or isinstance(value, str) else "must be a string (or null/None)"


def names_a_file(pretrained):
    """Whether ``pretrained`` (a str or path) names a weights file rather than an open_clip tag."""
    pretrained = os.fspath(pretrained)
    return os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def _text_or_path(value):
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        return "must be a string or a path (or null/None)"
    if names_a_file(value) and not os.path.isfile(value):
        return "names no file here: give an existing weights file, an open_clip tag (e.g. openai) or none"
    return None


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


def _channel_values(least=None):
    """3 finite numbers, one per color channel, each >= least where given (or None: the model's own)."""
    wanted = (f"3 finite numbers{'' if least is None else f' >= {least:g}'}, one per color channel (R, G, B) (or "
              "null/None: the model's own)")

    def problem(value):
        if value is None:
            return None
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
                _is_number(v) and math.isfinite(v) for v in value):
            return f"must be {wanted}"
        if least is not None and min(value) < least:
            return f"must be {wanted}: a std must be >= {least:g} ({STD_TOO_SMALL})"
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
    if len(value) < 2:
        return ("needs at least 2 classes: with one, the loss and accuracy are trivially 0 and 100% (there is "
                "nothing to tell apart)")
    return None


# In the order of CLIPoodLearner's config (checkpoints record it so), then the front ends' run settings.
TABLE = [
    Setting("model_name", "the open_clip architecture", _text, "ViT-B-16", BUILD, learner=CONFIG, flag="model",
            hparam="clip_model", config_key="MODEL.BACKBONE.NAME", kind=str,
            help="open_clip model name, CoOp-style name, or clipood-tiny"),
    Setting("pretrained", "the weights: an open_clip tag, a local file, or None (random init)", _text_or_path,
            "openai", BUILD, learner=CONFIG, flag="pretrained", hparam="clip_pretrained",
            config_key="TRAINER.CLIPOOD.PRETRAINED", kind=str,
            help="open_clip tag, local checkpoint file, or 'none' (random init)"),
    Setting("total_steps", "the number of optimizer steps, the cosine and averaging horizon",
            _count(1, most=MAX_STEPS), 5000, BUILD, trains=True, learner=CONFIG, flag="steps", hparam="steps",
            config_key="OPTIM.MAX_EPOCH x TRAINER.CLIPOOD.ITERS_PER_EPOCH",
            help="optimizer steps (= BMA and cosine horizon)"),
    Setting("lr", "the AdamW learning rate", _number(0, low_open=True), 5e-6, HPARAM, trains=True, learner=CONFIG,
            flag="lr", hparam="lr", config_key="OPTIM.LR", help="AdamW learning rate"),
    Setting("weight_decay", "the AdamW weight decay", _number(0), 0.1, HPARAM, trains=True, learner=CONFIG,
            flag="weight_decay", hparam="weight_decay", config_key="OPTIM.WEIGHT_DECAY", help="AdamW weight decay"),
    Setting("margin", "the MMS margin weight lambda, 0 for plain fine-tuning", _number(0), 0.3, TRAJECTORY,
            trains=True, learner=CONFIG, flag="mms_lambda", hparam="mms_lambda",
            config_key="TRAINER.CLIPOOD.MMS_LAMBDA", help="MMS margin weight (0 = plain fine-tuning)"),
    Setting("margin_kind", "the margin of each wrong class", _choice(MARGIN_KINDS), "adaptive", TRAJECTORY,
            trains=True, learner=CONFIG, flag="margin_kind", hparam="margin_kind",
            config_key="TRAINER.CLIPOOD.MARGIN_KIND",
            help="margin of each wrong class: adaptive (MMS: lambda x text distance), fixed (lambda), none"),
    Setting("head", "the classifier", _choice(HEAD_CHOICES), "text", BUILD, learner=CONFIG, flag="head",
            hparam="head", config_key="TRAINER.CLIPOOD.HEAD",
            help="classifier: text (class text features, Eq. 2) or linear (trained, initialized from them, Eq. 1; "
                 "needs --margin-kind none)"),
    Setting("beta", "the Beta(beta, beta) weighting of the moving average", _number(0, low_open=True), 0.5,
            TRAJECTORY, trains=True, learner=CONFIG, flag="bma_beta", hparam="bma_beta",
            config_key="TRAINER.CLIPOOD.BMA_BETA", help="Beta(beta, beta) of the moving average"),
    Setting("averaging", "the weight averaging used for prediction", _choice(AVERAGING_CHOICES), "bma", BUILD,
            trains=True, learner=CONFIG, flag="averaging", hparam="averaging", config_key="TRAINER.CLIPOOD.AVERAGING",
            help="weight averaging used for prediction (uniform: the mean of the weights after steps 1..T; swad: "
                 "dense averaging over the window of low holdout loss)"),
    Setting("ema_decay", "the decay of the EMA averaging", _number(0, 1, high_open=True), 0.999, TRAJECTORY,
            trains=True, learner=CONFIG, flag="ema_decay", hparam="ema_decay", config_key="TRAINER.CLIPOOD.EMA_DECAY",
            help="decay of --averaging ema"),
    # SWAD's evaluation interval, N_s, N_e and r: the SWAD authors' config.yaml and their CHECKPOINT_FREQ of PACS,
    # VLCS, OfficeHome and TerraIncognita (averaging.SWAD)
    Setting("swad_every", "the steps between SWAD's validation losses", _count(1), 200, TRAJECTORY, trains=True,
            learner=CONFIG, flag="swad_every", hparam="swad_every", config_key="TRAINER.CLIPOOD.SWAD_EVERY",
            unrecorded=COMPARED_WHEN_RECORDED,
            help="--averaging swad: steps between validation losses on the holdout (SWAD's evaluation interval)"),
    Setting("swad_n_converge", "SWAD's N_s: the validation losses in which the first must be the least to start "
            "the window", _count(1), 3, TRAJECTORY, trains=True, learner=CONFIG, flag="swad_n_converge",
            hparam="swad_n_converge", config_key="TRAINER.CLIPOOD.SWAD_N_CONVERGE", unrecorded=COMPARED_WHEN_RECORDED,
            help="--averaging swad: N_s, the losses in which the first must be the least to start the window"),
    Setting("swad_n_tolerance", "SWAD's N_e: the validation losses of which one must stay under the threshold "
            "to go on averaging", _count(1), 6, TRAJECTORY, trains=True, learner=CONFIG, flag="swad_n_tolerance",
            hparam="swad_n_tolerance", config_key="TRAINER.CLIPOOD.SWAD_N_TOLERANCE",
            unrecorded=COMPARED_WHEN_RECORDED,
            help="--averaging swad: N_e, the losses of which one must stay under the threshold to go on averaging"),
    Setting("swad_tolerance_ratio", "SWAD's r: the threshold is (1 + r) x the mean loss at the window's start",
            _number(0), 0.3, TRAJECTORY, trains=True, learner=CONFIG, flag="swad_tolerance_ratio",
            hparam="swad_tolerance_ratio", config_key="TRAINER.CLIPOOD.SWAD_TOLERANCE_RATIO",
            unrecorded=COMPARED_WHEN_RECORDED,
            help="--averaging swad: r, the threshold is (1 + r) x the mean loss at the window's start"),
    Setting("templates", "the prompt template(s)", _templates, ("a photo of a {}.",), TRAJECTORY, learner=CONFIG,
            flag="templates", hparam="prompt_template", config_key="TRAINER.CLIPOOD.TEMPLATES", kind=list,
            help="prompt template(s); several are ensembled; openai_imagenet: OpenAI's 80 ImageNet templates"),
    Setting("logit_scale", "the temperature of the logits, None for the model's",
            _number(0, low_open=True, optional=True), None, TRAJECTORY, learner=CONFIG),
    Setting("precision", "the training numerics", _choice(PRECISION_CHOICES), "auto", TRAJECTORY, learner=CONFIG,
            flag="precision", hparam="clip_precision", config_key="TRAINER.CLIPOOD.PREC",
            unrecorded=COMPARED_WHEN_RECORDED,
            help="auto: bf16 (else fp16) autocast on CUDA, fp32 elsewhere; authors-fp16: the reference code's fp16 "
                 "weights and BMA"),
    Setting("zero_shot", "whether the learner never trains", _flag, False, BUILD, learner=CONFIG),
    Setting("compile", "torch.compile of the training step", _choice(COMPILE_CHOICES), "auto", FREE, trains=True,
            learner=CONFIG, flag="compile", hparam="clip_compile", config_key="TRAINER.CLIPOOD.COMPILE",
            help="torch.compile the training step: auto (on CUDA, with CUDA graphs), on, reduce-overhead (with CUDA "
                 "graphs), off"),
    Setting("image_norm", "the input (normalization, resize) of weights that do not describe theirs (a local file, "
            "random init)", image_norm_problem, AUTO, BUILD, learner=CONFIG, flag="image_norm",
            hparam="clip_image_norm", config_key="TRAINER.CLIPOOD.IMAGE_NORM",
            unrecorded=IMAGE_NORMS["openai"].norm,  # every run before it was recorded trained on OpenAI's input
            help="the input of weights that do not describe theirs (a local file, random init): openai, siglip, "
                 "imagenet, M,M,M:S,S,S (mean:std) or MODEL/TAG (a tag's); auto: a tag's or export's own, else "
                 "openai"),
    # the images a front end hands over (its normalization; the learner maps it onto the model's input)
    Setting("input_mean", "the per-channel mean the input images are normalized with", _channel_values(), None,
            learner=ARGUMENT, config_key="INPUT.PIXEL_MEAN"),
    Setting("input_std", "the per-channel std the input images are normalized with", _channel_values(MIN_STD),
            None, learner=ARGUMENT, config_key="INPUT.PIXEL_STD"),
    Setting("max_consecutive_skips", "the non-finite steps in a row that end a run", _count(1), 20, trains=True,
            learner=ARGUMENT),
    Setting("class_names", "the class names, in label order", _class_names, resume=TRAJECTORY, learner=ARGUMENT,
            hparam="class_names", config_key="the dataset's class names"),
    Setting("device", "the device the learner trains and predicts on (None: cuda when available)", _text, None,
            learner=ARGUMENT, flag="device", kind=str,
            help="cuda, cpu, ... (default: cuda when available; under torchrun each process takes cuda:LOCAL_RANK)"),
    # run settings of the front ends (the learner never sees them)
    Setting("open_class_ratio", "the share of classes held out of training as new classes",
            _number(0, 1, high_open=True), 0.0, TRAJECTORY, hparam="open_class_ratio",
            config_key="TRAINER.CLIPOOD.OPEN_CLASSES"),
    Setting("batch_size", "the images per training domain per step", _count(1), 12, TRAJECTORY, flag="batch_size",
            hparam="batch_size", config_key="DATALOADER.TRAIN_X.BATCH_SIZE",
            help="images per training domain per step"),
    Setting("decode", "where training images are decoded", _choice(DECODE_CHOICES), "auto", flag="decode",
            config_key="TRAINER.CLIPOOD.DECODE",
            help="where training JPEGs are decoded and augmented: cpu (in the loader processes), device (in "
                 "batch on the training device, nvJPEG on CUDA), auto (device on CUDA, else cpu)"),
    Setting("holdout_fraction", "the share of each training domain kept for validation",
            _number(0, 1, high_open=True), 0.2, TRAJECTORY, flag="holdout_fraction",
            help="share of each training domain kept for validation"),
    # the evaluations and checkpoints a run records
    Setting("eval_every", "the steps between evaluations", _count(1), 500, TRAJECTORY, flag="eval_every",
            help="evaluate every N steps"),
    Setting("checkpoint_every", "the steps between checkpoints", _count(1), 500, TRAJECTORY, flag="checkpoint_every",
            help="save a resumable checkpoint every N steps"),
    Setting("stop_after", "the step to stop at with a checkpoint", _count(1, optional=True), None, flag="stop_after",
            kind=int, help="stop (with a checkpoint) after this many steps of this command, counted from where it "
                           "resumed; the same command with --resume makes as many more (Slurm requeue)"),
    Setting("workers", "the data loading processes per domain", _count(0), min(4, os.cpu_count() or 1),
            flag="workers", help="data loading processes per domain"),
    Setting("eval_batch_size", "the batch size of evaluation", _count(1), 128, flag="eval_batch_size",
            help="batch size for evaluation"),
    # an evaluation of a finished model (clipood_plugin.wise_ft)
    Setting("wise_ft_alphas", "WiSE-FT's weights alpha of (1 - alpha) pretrained + alpha fine-tuned", _alphas),
]
SETTINGS = {setting.name: setting for setting in TABLE}
SWAD_DEFAULTS = {name: SETTINGS[name].default for name in SETTINGS if name.startswith("swad_")}


def defaults(names=None):
    """{name: default} of the settings named (default: all) that have one."""
    return {name: SETTINGS[name].default for name in (names or SETTINGS) if SETTINGS[name].default != REQUIRED}


def learner_names(*kinds):
    """The settings CLIPoodLearner takes as ``kinds`` (CONFIG, ARGUMENT), in the table's order."""
    return tuple(name for name, setting in SETTINGS.items() if setting.learner in kinds)


def resume_keys(behaviour):
    """The learner config's settings that behave so on resume (BUILD, TRAJECTORY, HPARAM, FREE)."""
    return tuple(name for name in learner_names(CONFIG) if SETTINGS[name].resume == behaviour)


def compared_when_recorded():
    """The settings a checkpoint saved before they were recorded lacks: compared only where recorded."""
    return tuple(name for name, setting in SETTINGS.items() if setting.unrecorded == COMPARED_WHEN_RECORDED)


def as_recorded(config):
    """A checkpoint's config with the value every checkpoint saved before a setting was recorded had, where
    the setting names one (e.g. image_norm: OpenAI's input)."""
    return {**{name: setting.unrecorded for name, setting in SETTINGS.items()
               if setting.unrecorded not in (RECORDED, COMPARED_WHEN_RECORDED)}, **config}


def changed_settings(saved, now, names):
    """The one comparison of settings on resume: [(name, saved value, value now)] for the names whose values
    differ (a list and a tuple of the same items are the same value: a checkpoint may store one where the run
    holds the other)."""
    def comparable(value):
        return tuple(value) if isinstance(value, list) else value
    return [(name, saved.get(name), now.get(name)) for name in names
            if comparable(saved.get(name)) != comparable(now.get(name))]


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


@dataclass(frozen=True)
class Rule:
    """A rule that ties settings together. ``broken(values, held_out)``: whether these settings (every one
    given, defaults filled in) break it, ``held_out`` being whether the run has held-out images of its training
    domains (None: not known here). ``statement`` and ``fix`` word it with ``say(name, value)`` and ``label(name)``
    (a setting as the front end spells it); a front end may give its own words for the fix."""
    name: str
    broken: object
    statement: object
    fix: object


RULES = [
    Rule("linear_head", lambda values, held_out: values["head"] == "linear" and values["margin_kind"] != "none",
         lambda say, label, values: f"{say('head', 'linear')} is standard fine-tuning (Eq. 1) with plain "
                                    "cross-entropy, without the margins of the text head's metric softmax "
                                    "(margin_kind='none')",
         lambda say, label, values: f"set {say('margin_kind', 'none')}, not {values['margin_kind']!r}"),
    Rule("swad_held_out", lambda values, held_out: values["averaging"] == "swad" and held_out is False,
         lambda say, label, values: f"{say('averaging', 'swad')} finds its window from the loss on held-out images "
                                    "of the training domains, and this run holds none out",
         lambda say, label, values: "give it held-out images of its training domains"),
    Rule("open_classes", lambda values, held_out: values["open_class_ratio"] > 0 and values["head"] != "text",
         lambda say, label, values: f"{label('open_class_ratio')} > 0 needs the text head: a linear head has no "
                                    "weights for the new classes",
         lambda say, label, values: f"set {say('head', 'text')} or {say('open_class_ratio', 0)}"),
]


def check_rules(values, spelled=None, held_out=None, fixes=None):
    """Raise SettingError, in one message per rule, for the first of RULES that ``values`` ({core name: value};
    the settings not given take their defaults) break, spelled as check_settings spells them (a setting and its
    value: ``name=value`` in the library, ``spelled(name) value`` in a front end). ``fixes``: {rule name: the
    front end's own words for the fix}, e.g. which of its options gives held-out images."""
    values = {**defaults(), **values}
    label = spelled or (lambda name: name)

    def say(name, value):
        return f"{name}={value!r}" if spelled is None else f"{spelled(name)} {value}"
    for rule in RULES:
        if rule.broken(values, held_out):
            fix = (fixes or {}).get(rule.name) or rule.fix(say, label, values)
            raise SettingError(f"{rule.statement(say, label, values)}; {fix}")


def check_device(name, option="--device"):
    """Raise DataError, in one line naming ``option``, unless ``name`` (None: the default device) is a
    device torch can use here. torch is imported on use, after what the CUDA driver alone can tell."""
    if name in (None, "cpu"):
        return
    no_gpu = DataError(f"{option} {name}: no CUDA GPU is visible here; give {option} cpu, or run on a machine with a "
                       "GPU")
    if re.fullmatch(r"cuda(:\d+)?", name) and not cuda_device_count():  # asked of the driver: no torch import
        raise no_gpu
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DataError(f"{option} {name}: not a device name; give cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise no_gpu
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


"""The cfg.TRAINER.CLIPOOD node, DATASET.SUBSAMPLE_CLASSES, and per-dataset settings.

Defaults here only make config files mergeable (yacs rejects unknown keys); the paper's settings
live in configs/dassl/trainers/CLIPood/*.yaml.
"""
from clipood_plugin.settings import SWAD_DEFAULTS
from yacs.config import CfgNode as CN

# the config key of each SWAD setting (TRAINER.CLIPOOD.SWAD_EVERY, ...)
SWAD_KEYS = {name: "TRAINER.CLIPOOD." + name.upper() for name in SWAD_DEFAULTS}

def clipood_node():
    node = CN()
    node.MMS_LAMBDA = 0.3  # margin of Margin Metric Softmax
    node.BMA_BETA = 0.5  # Beta(beta, beta) weighting of the Beta Moving Average
    # the paper's analysis (Figure 5): the method's settings by default
    node.HEAD = "text"  # text (Eq. 2) or linear (Eq. 1: trained classifier, needs MARGIN_KIND none)
    node.MARGIN_KIND = "adaptive"  # adaptive (MMS), fixed (MMS_LAMBDA for every wrong class), none
    node.AVERAGING = "bma"  # bma, uniform (mean of the weights after steps 1..T), ema, swad, none
    node.EMA_DECAY = 0.999  # decay of AVERAGING ema
    # AVERAGING swad (needs the dataset's validation split): its validation interval in steps, N_s, N_e and r
    for name, default in SWAD_DEFAULTS.items():
        setattr(node, name.upper(), default)
    node.PRETRAINED = "openai"  # open_clip tag or local file; "" = random init (for clipood-tiny)
    # the input (normalization, resize) of weights that do not describe theirs (a local file, random init):
    # auto (a tag's own, else OpenAI's), openai, siglip, imagenet, "M,M,M:S,S,S", "MODEL/TAG" (a tag's)
    node.IMAGE_NORM = "auto"
    node.PREC = "auto"  # CLIPoodLearner's precision: auto (bf16 autocast on a GPU that has it, else fp16 / fp32),
    #                     amp-bf16, amp-fp16, fp32, authors-fp16 (the reference code's fp16 weights)
    node.COMPILE = "auto"  # torch.compile of the image encoder: auto (CUDA graphs on one GPU), on, reduce-overhead, off
    node.DECODE = "auto"  # training JPEGs decoded and augmented by the loader processes (cpu), the device, or auto
    # (the device on CUDA when INPUT.TRANSFORMS allows, else cpu)
    node.ITERS_PER_EPOCH = 500  # optimizer steps per epoch; <= 0: one pass over the training set
    node.TEMPLATES = []  # prompt templates ("a photo of a {}."); empty: the core's default
    node.OPEN_CLASSES = False  # train on the first half of classes, test on all (datasets that don't split)
    # DATASET.NAME -> cfg keys for that dataset only, e.g. {OxfordPets: {OPTIM: {MAX_EPOCH: 1}}}
    node.PER_DATASET = CN(new_allowed=True)
    return node


# the config key behind each core setting (clipood_plugin.settings.SETTINGS and the learner's config), so that
# the core's gate and resume checks name the key a Dassl user sets
CONFIG_KEYS = {"lr": "OPTIM.LR", "weight_decay": "OPTIM.WEIGHT_DECAY", "margin": "TRAINER.CLIPOOD.MMS_LAMBDA",
               "margin_kind": "TRAINER.CLIPOOD.MARGIN_KIND", "head": "TRAINER.CLIPOOD.HEAD",
               "beta": "TRAINER.CLIPOOD.BMA_BETA", "averaging": "TRAINER.CLIPOOD.AVERAGING",
               "ema_decay": "TRAINER.CLIPOOD.EMA_DECAY", "templates": "TRAINER.CLIPOOD.TEMPLATES",
               "precision": "TRAINER.CLIPOOD.PREC", "compile": "TRAINER.CLIPOOD.COMPILE",
               "decode": "TRAINER.CLIPOOD.DECODE", "input_mean": "INPUT.PIXEL_MEAN", "input_std": "INPUT.PIXEL_STD",
               "batch_size": "DATALOADER.TRAIN_X.BATCH_SIZE", "model_name": "MODEL.BACKBONE.NAME",
               "pretrained": "TRAINER.CLIPOOD.PRETRAINED", "image_norm": "TRAINER.CLIPOOD.IMAGE_NORM",
               "total_steps": "OPTIM.MAX_EPOCH x TRAINER.CLIPOOD.ITERS_PER_EPOCH",
               "class_names": "the dataset's class names", **SWAD_KEYS}


def config_key(setting):
    """The config key of a core setting (its core name where Dassl has none)."""
    return CONFIG_KEYS.get(setting, setting)


# settings the trainer uses itself; the others of core_settings are the learner's arguments
RUN_SETTINGS = ("decode", "batch_size")


def core_settings(cfg):
    """{core setting: value} as the config sets them: what the core's gate checks, and (but RUN_SETTINGS) the
    learner's arguments."""
    values = {setting: _lookup(cfg, CONFIG_KEYS[setting]) for setting in (
        "lr", "weight_decay", "margin", "margin_kind", "head", "beta", "averaging", "ema_decay", *SWAD_KEYS,
        "precision", "compile", "image_norm", *RUN_SETTINGS)}
    if cfg.TRAINER.CLIPOOD.TEMPLATES:  # empty: the core's default
        values["templates"] = tuple(cfg.TRAINER.CLIPOOD.TEMPLATES)
    normalized = "normalize" in cfg.INPUT.TRANSFORMS  # else Dassl hands over images in [0, 1]
    values["input_mean"] = tuple(cfg.INPUT.PIXEL_MEAN) if normalized else (0.0, 0.0, 0.0)
    values["input_std"] = tuple(cfg.INPUT.PIXEL_STD) if normalized else (1.0, 1.0, 1.0)
    return values


def add_config_defaults(cfg):
    """Add the CLIPood node and DATASET.SUBSAMPLE_CLASSES to ``cfg`` where missing (idempotent).

    CoOp's extend_cfg assigns SUBSAMPLE_CLASSES again later, which yacs allows on an existing key.
    """
    if "CLIPOOD" not in cfg.TRAINER:
        cfg.TRAINER.CLIPOOD = clipood_node()
    if "SUBSAMPLE_CLASSES" not in cfg.DATASET:
        cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # all, base or new (read by CoOp's datasets)


def apply_per_dataset_settings(cfg):
    """A frozen copy of ``cfg`` with TRAINER.CLIPOOD.PER_DATASET[DATASET.NAME] merged in.

    Returns (cfg, description of what changed). The entry wins over the rest of the config, command
    line included; change it with e.g. ``TRAINER.CLIPOOD.PER_DATASET.OxfordPets.OPTIM.MAX_EPOCH 3``.
    """
    entry = cfg.TRAINER.CLIPOOD.PER_DATASET.get(cfg.DATASET.NAME)
    if not entry:
        return cfg, []
    resolved = cfg.clone()
    resolved.defrost()
    resolved.merge_from_other_cfg(entry)
    resolved.freeze()
    changes = []
    for key in _leaf_keys(entry):
        before, after = _lookup(cfg, key), _lookup(resolved, key)
        changes.append(f"{key}={after!r}" if before == after else f"{key} {before!r} -> {after!r}")
    return resolved, changes


def _leaf_keys(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, CN):
            yield from _leaf_keys(value, f"{prefix}{key}.")
        else:
            yield prefix + key


def _lookup(cfg, dotted_key):
    for part in dotted_key.split("."):
        cfg = cfg[part]
    return cfg

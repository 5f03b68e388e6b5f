"""The cfg.TRAINER.CLIPOOD node, DATASET.SUBSAMPLE_CLASSES, and per-dataset settings.

Defaults here only make config files mergeable (yacs rejects unknown keys); the paper's settings
live in configs/dassl/trainers/CLIPood/*.yaml.
"""
from clipood_plugin.settings import SETTINGS, check_rules
from yacs.config import CfgNode as CN

from .open_classes import OPEN_CLASS_RATIO

NODE = "TRAINER.CLIPOOD."
# the config key behind each core setting (the settings table's Dassl spellings), so that the core's gate and
# resume checks name the key a Dassl user sets
CONFIG_KEYS = {name: setting.config_key for name, setting in SETTINGS.items() if setting.config_key}
# settings the trainer works out from the config rather than reading one key
COMPUTED = ("total_steps", "class_names", "templates", "input_mean", "input_std", "open_class_ratio")


def clipood_node():
    """TRAINER.CLIPOOD: the table's default of each setting Dassl spells in it (TRAINER.CLIPOOD.MMS_LAMBDA, ...:
    clipood_plugin.settings.TABLE says what each means), and the trainer's own keys."""
    node = CN()
    for name, key in CONFIG_KEYS.items():
        if key.startswith(NODE) and name != "open_class_ratio":
            default = SETTINGS[name].default
            setattr(node, key.removeprefix(NODE), list(default) if isinstance(default, tuple) else default)
    node.ITERS_PER_EPOCH = 500  # optimizer steps per epoch; <= 0: one pass over the training set
    node.OPEN_CLASSES = False  # train on the first half of classes, test on all (datasets that don't split)
    # DATASET.NAME -> cfg keys for that dataset only, e.g. {OxfordPets: {OPTIM: {MAX_EPOCH: 1}}}
    node.PER_DATASET = CN(new_allowed=True)
    return node


def config_key(setting):
    """The config key of a core setting (its core name where Dassl has none)."""
    return CONFIG_KEYS.get(setting, setting)


# settings the trainer uses itself; the others of core_settings are the learner's arguments
RUN_SETTINGS = ("decode", "batch_size", "open_class_ratio")


def core_settings(cfg):
    """{core setting: value} as the config sets them: what the core's gate checks, and (but RUN_SETTINGS) the
    learner's arguments."""
    values = {setting: _lookup(cfg, key) for setting, key in CONFIG_KEYS.items() if setting not in COMPUTED}
    if cfg.TRAINER.CLIPOOD.TEMPLATES:  # empty: the core's default
        values["templates"] = tuple(cfg.TRAINER.CLIPOOD.TEMPLATES)
    normalized = "normalize" in cfg.INPUT.TRANSFORMS  # else Dassl hands over images in [0, 1]
    values["input_mean"] = tuple(cfg.INPUT.PIXEL_MEAN) if normalized else (0.0, 0.0, 0.0)
    values["input_std"] = tuple(cfg.INPUT.PIXEL_STD) if normalized else (1.0, 1.0, 1.0)
    values["open_class_ratio"] = OPEN_CLASS_RATIO if cfg.TRAINER.CLIPOOD.OPEN_CLASSES else 0.0
    return values


def check_cross_settings(cfg, held_out=None):
    """Raise SettingError for a rule of the core's gate that the config's settings break, spelled as Dassl
    spells them. ``held_out``: whether the dataset has a val split (None: not known yet)."""
    check_rules(core_settings(cfg), spelled=config_key, held_out=held_out, fixes={
        # OPEN_CLASSES holds out a share of the classes; the val split is the held-out data of SWAD
        "open_classes": "in TRAINER.CLIPOOD set HEAD text, or OPEN_CLASSES False",
        "swad_held_out": f"{cfg.DATASET.NAME} has no val split here: choose a dataset with one, or another AVERAGING"})


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

"""CLIPood's entries in DomainBed's hparams registry: paper settings as data, one place.

``clipood_hparams(algorithm, dataset, random_seed)`` returns ``{name: (default, random_value)}`` in the
shape of ``domainbed.hparams_registry._hparams``; registration merges it over DomainBed's own entries
(its ``lr``, ``weight_decay`` and ``batch_size`` are replaced by these).
"""
import difflib
import zlib

import numpy as np

from clipood_plugin.settings import SETTINGS, SWAD_DEFAULTS, check_rules, check_settings

from .class_names import known_class_names

ALGORITHM_NAMES = ("CLIPood", "CLIPERM", "CLIPZeroShot")

# Paper Table 1 learning rates (authors' scripts); datasets not listed use DEFAULT_LR, the table's.
PAPER_LR = {"PACS": 5e-6, "VLCS": 5e-6, "TerraIncognita": 5e-6, "OfficeHome": 1e-5, "DomainNet": 1e-5}
DEFAULT_LR = SETTINGS["lr"].default
PAPER_BATCH_SIZE = SETTINGS["batch_size"].default  # per training domain
# DomainBed's Debug datasets hold 16 random images per environment (13 after the 20% holdout): a batch
# larger than that never comes out of its drop_last loader. They also default to the tiny random-init
# model so DomainBed's own smoke tests (test_models, a Debug sweep) run offline, uncompiled (compiling costs
# more than their 3 steps).
SMOKE_TEST_DATASETS = ("Debug28", "Debug224")
SMOKE_TEST_BATCH_SIZE = 8
SMOKE_TEST_MODEL = ("clipood-tiny", None)
# CLIPood's switches of the paper's analysis (Figure 5), each the CLIPoodLearner argument of the same name
ABLATION_HPARAMS = ("head", "margin_kind", "averaging", "ema_decay", *SWAD_DEFAULTS)
# the hparams of CLIPood alone: CLIPERM fixes lambda=0 and no averaging; zero-shot trains nothing
CLIPOOD_ONLY = ("mms_lambda", "bma_beta", *ABLATION_HPARAMS)
# the core setting behind each CLIP hparam (the settings table's DomainBed spellings), so that the core's gate
# checks it
CORE_SETTINGS = {setting.hparam: name for name, setting in SETTINGS.items() if setting.hparam}
# DomainBed's random search of the hparams it searches, a draw from (the default, a RandomState); the other
# hparams keep their default
SEARCHES = {
    "lr": lambda lr, r: lr * 10 ** r.uniform(-0.5, 0.5),
    "weight_decay": lambda _, r: 10 ** r.uniform(-2, -0.5),
    "batch_size": lambda _, r: int(r.choice([8, 12, 16])),
    "mms_lambda": lambda _, r: float(r.choice([0.1, 0.2, 0.3, 0.5])),
    "bma_beta": lambda _, r: float(r.choice([0.1, 0.3, 0.5, 1.0])),
}


def _default(hparam, dataset):
    """The table's default of an hparam in DomainBed's spelling, or the paper's (or a smoke test's) for
    ``dataset``."""
    smoke = dataset in SMOKE_TEST_DATASETS
    clip_model, clip_pretrained = SMOKE_TEST_MODEL if smoke else (SETTINGS["model_name"].default,
                                                                  SETTINGS["pretrained"].default)
    own = {
        "clip_model": clip_model,
        "clip_pretrained": clip_pretrained,
        "clip_compile": "off" if smoke else SETTINGS["compile"].default,
        "prompt_template": SETTINGS["templates"].default[0],  # DomainBed's hparam is one template
        "lr": PAPER_LR.get(dataset, DEFAULT_LR),
        "batch_size": SMOKE_TEST_BATCH_SIZE if smoke else PAPER_BATCH_SIZE,
        # the dataset's names where they are known, so hparams built for a dataset stand on their own
        "class_names": known_class_names(dataset),
        "steps": None,  # None: the steps train.py runs (see docs/domainbed.md)
    }
    return own[hparam] if hparam in own else SETTINGS[CORE_SETTINGS[hparam]].default


def _entries(algorithm, dataset):
    """(name, default, random_fn) for one algorithm and dataset; random_fn takes a RandomState."""
    smoke = dataset in SMOKE_TEST_DATASETS
    names = [hparam for hparam in CORE_SETTINGS if algorithm == "CLIPood" or hparam not in CLIPOOD_ONLY]
    names.append("clip_transforms")  # "clipood": the authors' image transforms instead of DomainBed's (data.py)
    entries = []
    for name in names:
        default = "domainbed" if name == "clip_transforms" else _default(name, dataset)
        search = SEARCHES.get(name)
        if search is None or (smoke and name == "batch_size"):
            entries.append((name, default, lambda r, value=default: list(value) if isinstance(value, list)
                            else value))
        else:
            entries.append((name, default, lambda r, value=default, search=search: search(value, r)))
    return entries


def _random_state(random_seed, name):
    # deterministic across processes (unlike hash()), one stream per hparam as DomainBed does
    return np.random.RandomState(zlib.crc32(f"clipood|{random_seed}|{name}".encode()))


def clipood_hparams(algorithm, dataset, random_seed):
    """{name: (default, random value)} for one of ALGORITHM_NAMES."""
    if algorithm not in ALGORITHM_NAMES:
        raise ValueError(f"{algorithm!r} is not one of {ALGORITHM_NAMES}")
    return {name: (default, random_fn(_random_state(random_seed, name)))
            for name, default, random_fn in _entries(algorithm, dataset)}


def default_clipood_hparams(algorithm, dataset):
    return {name: default for name, (default, _) in clipood_hparams(algorithm, dataset, 0).items()}


def core_values(hparams, keys):
    """{core setting: value} of those of ``keys`` that ``hparams`` holds (e.g. the learner's arguments)."""
    return {CORE_SETTINGS[key]: hparams[key] for key in keys if key in hparams}


# hparams whose null means "not given" (the registry's default for them): the run fills them in
NULL_MEANS_UNSET = ("class_names", "steps")


def check_hparams(algorithm, hparams, dataset=None, held_out=None):
    """Raise ValueError, naming the hparam, for a key the algorithm does not know (with the nearest known one),
    a value outside what its setting allows, or settings that break a rule of the core's gate (strings such as
    "5e-6" are refused, not converted). The known keys are those DomainBed's registry gives the algorithm, its
    own (batch_size, data_augmentation, ...) included. ``held_out``: whether the run holds out images of its
    training environments (None: not known here)."""
    known = set(clipood_hparams(algorithm, dataset, 0))
    try:
        from domainbed import hparams_registry
    except ImportError:  # the adapter's contract tests run the algorithms without DomainBed
        pass
    else:
        known |= set(hparams_registry.default_hparams(algorithm, dataset))
    for key in sorted(set(hparams) - known):
        near = difflib.get_close_matches(key, known, n=1)
        raise ValueError(f"unknown hparam {key!r} for {algorithm}" + (f"; did you mean {near[0]!r}?" if near else "")
                         + f" (its hparams: {', '.join(sorted(known))})")
    core = core_values(hparams, [key for key, value in hparams.items()
                                 if key in CORE_SETTINGS and not (value is None and key in NULL_MEANS_UNSET)])
    spelled = {setting: f"hparam {key}" for key, setting in CORE_SETTINGS.items()}.get
    check_settings(core, spelled=spelled, training=algorithm != "CLIPZeroShot")
    check_rules(core, spelled=spelled, held_out=held_out, fixes={
        "swad_held_out": "DomainBed's train.py holds out the out-splits of the training environments, which only a "
                         "run of domainbed.scripts.train has: train it there"})

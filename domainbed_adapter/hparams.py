"""CLIPood's entries in DomainBed's hparams registry: paper settings as data, one place.

``clipood_hparams(algorithm, dataset, random_seed)`` returns ``{name: (default, random_value)}`` in the
shape of ``domainbed.hparams_registry._hparams``; registration merges it over DomainBed's own entries
(its ``lr``, ``weight_decay`` and ``batch_size`` are replaced by these).
"""
import difflib
import zlib

import numpy as np

from clipood_plugin.settings import SWAD_DEFAULTS, check_settings

from .class_names import known_class_names

ALGORITHM_NAMES = ("CLIPood", "CLIPERM", "CLIPZeroShot")

# Paper Table 1 learning rates (authors' scripts); datasets not listed use DEFAULT_LR.
PAPER_LR = {"PACS": 5e-6, "VLCS": 5e-6, "TerraIncognita": 5e-6, "OfficeHome": 1e-5, "DomainNet": 1e-5}
DEFAULT_LR = 5e-6
PAPER_BATCH_SIZE = 12  # per training domain
# DomainBed's Debug datasets hold 16 random images per environment (13 after the 20% holdout): a batch
# larger than that never comes out of its drop_last loader. They also default to the tiny random-init
# model so DomainBed's own smoke tests (test_models, a Debug sweep) run offline.
SMOKE_TEST_DATASETS = ("Debug28", "Debug224")
SMOKE_TEST_BATCH_SIZE = 8
SMOKE_TEST_MODEL = ("clipood-tiny", None)
# CLIPood's switches of the paper's analysis (Figure 5), each the CLIPoodLearner argument of the same name
ABLATION_HPARAMS = ("head", "margin_kind", "averaging", "ema_decay", *SWAD_DEFAULTS)


def _fixed(value):
    return lambda r: value


def _entries(algorithm, dataset):
    """(name, default, random_fn) for one algorithm and dataset; random_fn takes a RandomState."""
    smoke = dataset in SMOKE_TEST_DATASETS
    clip_model, clip_pretrained = SMOKE_TEST_MODEL if smoke else ("ViT-B-16", "openai")
    lr = PAPER_LR.get(dataset, DEFAULT_LR)
    entries = [
        ("clip_model", clip_model, _fixed(clip_model)),
        ("clip_pretrained", clip_pretrained, _fixed(clip_pretrained)),
        ("prompt_template", "a photo of a {}.", _fixed("a photo of a {}.")),
        # torch.compile of the training step: "auto" = with CUDA graphs on CUDA; off for the smoke tests
        # (compiling costs more than their 3 steps)
        ("clip_compile", "off" if smoke else "auto", _fixed("off" if smoke else "auto")),
        # the learner's precision; "authors-fp16" reproduces the numerics the paper's lrs were tuned under
        ("clip_precision", "auto", _fixed("auto")),
        # the input (normalization, resize) of weights that do not describe theirs (a local file, random init):
        # "auto" = a tag's own, else OpenAI's; "siglip", "M,M,M:S,S,S", "MODEL/TAG", ... (clipood_plugin.image_input)
        ("clip_image_norm", "auto", _fixed("auto")),
        # the dataset's names where they are known, so hparams built for a dataset stand on their own
        ("class_names", known_class_names(dataset), lambda r: known_class_names(dataset)),
        # "clipood": the authors' image transforms instead of DomainBed's (domainbed_adapter/data.py)
        ("clip_transforms", "domainbed", _fixed("domainbed")),
        ("open_class_ratio", 0.0, _fixed(0.0)),  # in-the-wild protocol: 0.5 in the paper (Table 4)
        ("steps", None, _fixed(None)),  # None: the steps train.py runs (see docs/domainbed.md)
        ("lr", lr, lambda r: lr * 10 ** r.uniform(-0.5, 0.5)),
        ("weight_decay", 0.1, lambda r: 10 ** r.uniform(-2, -0.5)),
        ("batch_size", SMOKE_TEST_BATCH_SIZE if smoke else PAPER_BATCH_SIZE,
         _fixed(SMOKE_TEST_BATCH_SIZE) if smoke else lambda r: int(r.choice([8, 12, 16]))),
    ]
    if algorithm == "CLIPood":  # CLIPERM fixes lambda=0 and no averaging; zero-shot trains nothing
        entries += [
            ("mms_lambda", 0.3, lambda r: float(r.choice([0.1, 0.2, 0.3, 0.5]))),
            ("bma_beta", 0.5, lambda r: float(r.choice([0.1, 0.3, 0.5, 1.0]))),
            # Figure 5 switches: the method by default, not searched
            ("head", "text", _fixed("text")),  # "linear": Eq. 1 (with margin_kind "none")
            ("margin_kind", "adaptive", _fixed("adaptive")),  # "fixed", "none"
            ("averaging", "bma", _fixed("bma")),  # "uniform", "ema", "swad", "none"
            ("ema_decay", 0.999, _fixed(0.999)),
            # averaging "swad": its validation interval, N_s, N_e and r (the SWAD authors' defaults)
            *((name, default, _fixed(default)) for name, default in SWAD_DEFAULTS.items()),
        ]
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


# the core setting behind each CLIP hparam (clipood_plugin.settings.SETTINGS), so that the core's gate checks it
CORE_SETTINGS = {"lr": "lr", "weight_decay": "weight_decay", "mms_lambda": "margin", "bma_beta": "beta",
                 "head": "head", "margin_kind": "margin_kind", "averaging": "averaging", "ema_decay": "ema_decay",
                 **{name: name for name in SWAD_DEFAULTS},
                 "prompt_template": "templates", "clip_precision": "precision", "clip_compile": "compile",
                 "clip_image_norm": "image_norm",
                 "class_names": "class_names", "steps": "total_steps", "batch_size": "batch_size",
                 "open_class_ratio": "open_class_ratio"}


def core_values(hparams, keys):
    """{core setting: value} of those of ``keys`` that ``hparams`` holds (e.g. the learner's arguments)."""
    return {CORE_SETTINGS[key]: hparams[key] for key in keys if key in hparams}


# hparams whose null means "not given" (the registry's default for them): the run fills them in
NULL_MEANS_UNSET = ("class_names", "steps")


def check_hparams(algorithm, hparams, dataset=None):
    """Raise ValueError, naming the hparam, for a key the algorithm does not know (with the nearest known one)
    or a value outside what its setting allows (checked by the core's gate; strings such as "5e-6" are
    refused, not converted). The known keys are those DomainBed's registry gives the algorithm, its own
    (batch_size, data_augmentation, ...) included."""
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
    spelled = {setting: key for key, setting in CORE_SETTINGS.items()}
    check_settings(core, spelled=lambda setting: f"hparam {spelled[setting]}", training=algorithm != "CLIPZeroShot")

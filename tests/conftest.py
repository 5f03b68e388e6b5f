"""Shared fixtures, and the one way a test says it needs a host framework.

A test that needs DomainBed, Dassl, CoOp or one of their dependencies says so with the ``needs`` marker,
never with its own ``skipif`` / ``importorskip``::

    pytestmark = pytest.mark.needs("domainbed", "wilds")    # every test of the module
    @pytest.mark.needs("coop")                               # one test
    require("dassl")    # from conftest import require; in a test or fixture, when only it knows

Names (``REQUIREMENTS`` below): domainbed, wilds, parameterized, dassl, dassl_checkout (Dassl installed
from a clone, with its tools/ and configs/), coop (COOP_ROOT), transformers (SigLIP's tokenizer). When one is missing the test is skipped
with the reason, which says how to get it (as on a user's machine). With ``CLIPOOD_REQUIRE_FRAMEWORKS=1``, which
``.ci/run`` sets when the pinned frameworks are present, a missing one is an error instead: CI cannot
pass by skipping the integration tests. Other skips (e.g. a CUDA-only test on a CPU machine) are plain
``pytest.skip`` and stay skips.
"""
import functools
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

from clipood_plugin import CLIPoodLearner

CLASSES = ["dog", "cat", "horse", "golden_retriever"]
REQUIRE_FRAMEWORKS = os.environ.get("CLIPOOD_REQUIRE_FRAMEWORKS", "") not in ("", "0")
INSTALL_EXTRAS = 'pip install ".[domainbed,dassl]"'


@pytest.fixture
def make_learner():
    """A clipood-tiny learner on the CPU, built from a fixed seed (same seed -> same initial weights)."""
    def make(seed=0, **kwargs):
        torch.manual_seed(seed)
        options = dict(model_name="clipood-tiny", pretrained=None, class_names=CLASSES, total_steps=6,
                       lr=1e-3, device="cpu")
        options.update(kwargs)
        return CLIPoodLearner(**options)
    return make


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """clipood-tiny "pretrained" weights: a fixed random init saved as a state dict, as a user's file is (a
    text tower to keep)."""
    from pretrained_cache import random_weights

    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(random_weights("clipood-tiny", seed=11), path)
    return path


@pytest.fixture
def batches():
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(6, 3, 32, 32, generator=generator), torch.randint(0, len(CLASSES), (6,), generator=generator))
            for _ in range(6)]


def domainbed_root():
    """Root of an importable DomainBed checkout (on PYTHONPATH, or DOMAINBED_ROOT), else None."""
    root = os.environ.get("DOMAINBED_ROOT")
    if root and root not in sys.path:
        sys.path.insert(0, root)
    try:
        import domainbed
    except ImportError:
        return None
    return os.path.dirname(os.path.dirname(os.path.abspath(domainbed.__file__)))


def dassl_root():
    """Root of the checkout Dassl is installed from (it holds tools/train.py), else None."""
    spec = importlib.util.find_spec("dassl")
    return Path(spec.origin).parents[1] if spec else None


def coop_root():
    """COOP_ROOT, when it is a CoOp checkout, else None."""
    root = os.environ.get("COOP_ROOT")
    return Path(root) if root and (Path(root) / "train.py").is_file() else None


def _module(name, why, install=INSTALL_EXTRAS):
    return lambda: None if importlib.util.find_spec(name) else f"`{name}` is not installed ({why}): {install}"


def _domainbed():
    if domainbed_root() is None:
        return ("DomainBed is not importable: put a checkout of github facebookresearch/DomainBed on PYTHONPATH "
                "or set DOMAINBED_ROOT")


def _dassl():
    if dassl_root() is None:
        return ("Dassl is not installed: pip install --no-deps --no-build-isolation -e a checkout of "
                "github KaiyangZhou/Dassl.pytorch")


def _dassl_checkout():
    root = dassl_root()
    if root is None:
        return _dassl()
    if not (root / "tools" / "train.py").is_file():
        return f"Dassl is installed without its tools/ and configs/ (not from a checkout: {root})"


def _coop():
    if coop_root() is None:
        return "set COOP_ROOT to a checkout of github KaiyangZhou/CoOp to run its train.py"


# name -> () -> None when available, else why not (and how to get it)
REQUIREMENTS = {
    "domainbed": _domainbed,
    "wilds": _module("wilds", "DomainBed's datasets and Dassl import it"),
    "parameterized": _module("parameterized", "DomainBed's tests import it"),
    "dassl": _dassl,
    "dassl_checkout": _dassl_checkout,  # tools/train.py, configs/
    "coop": _coop,
    # open_clip's Hugging Face tokenizers (SigLIP's) and text towers; not one of the frameworks, but a package
    # without which those families' tests would pass by skipping
    "transformers": _module("transformers", "open_clip's Hugging Face tokenizers, e.g. SigLIP's, need it",
                            'pip install ".[test]"'),
}


@functools.cache
def missing(name):
    """Why requirement ``name`` is not available, or None when it is."""
    if name not in REQUIREMENTS:
        raise ValueError(f"unknown requirement {name!r}: use one of {', '.join(REQUIREMENTS)}")
    return REQUIREMENTS[name]()


def require(*names):
    """Skip the running test unless every requirement in ``names`` is available; under
    CLIPOOD_REQUIRE_FRAMEWORKS=1 fail it instead."""
    reasons = list(dict.fromkeys(reason for reason in map(missing, names) if reason))
    if not reasons:
        return
    if REQUIRE_FRAMEWORKS:
        pytest.fail("CLIPOOD_REQUIRE_FRAMEWORKS is set, but " + "; ".join(reasons), pytrace=False)
    pytest.skip("; ".join(reasons))


def pytest_configure(config):
    config.addinivalue_line("markers", f"needs(*names): the test needs these frameworks or dependencies "
                                       f"({', '.join(REQUIREMENTS)}); see tests/conftest.py")


@pytest.hookimpl(tryfirst=True)  # before fixtures are set up: they may need the framework too
def pytest_runtest_setup(item):
    require(*(name for marker in item.iter_markers("needs") for name in marker.args))


@pytest.fixture(scope="session")
def hub_cache_dir(tmp_path_factory):
    """The session's synthetic Hugging Face hub cache: one folder for every entry, as a user's cache is (a
    library may read the folder once, at its import)."""
    return tmp_path_factory.mktemp("hf_hub_cache")


@pytest.fixture(scope="session")
def synthetic_openai_weights(hub_cache_dir):
    """ViT-B-32 (the smallest model with an OpenAI tag) "openai" as a hub-cache entry of random weights,
    written once per session (fp16 to halve the file; they load into fp32 models)."""
    from types import SimpleNamespace

    from pretrained_cache import random_weights, write_hub_cache_entry
    cache_dir = hub_cache_dir
    weights = {key: value.half() for key, value in random_weights("ViT-B-32-quickgelu").items()}
    path = write_hub_cache_entry(cache_dir, "ViT-B-32", "openai", weights)
    return SimpleNamespace(cache_dir=cache_dir, weights=path, model="ViT-B-32", tag="openai",
                           architecture="ViT-B-32-quickgelu")


def use_hub_cache(monkeypatch, cache_dir):
    """HF_HUB_CACHE points at ``cache_dir``: the environment variable, and huggingface_hub's constant read from
    it at import. The hub's offline switch, which load_clip sets, is restored when ``monkeypatch`` undoes."""
    import huggingface_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", huggingface_hub.constants.HF_HUB_OFFLINE)


@pytest.fixture
def openai_hub_cache(synthetic_openai_weights, monkeypatch):
    """The hub cache holding the synthetic OpenAI entry, for the test (use_hub_cache)."""
    use_hub_cache(monkeypatch, synthetic_openai_weights.cache_dir)
    return synthetic_openai_weights


@pytest.fixture(scope="session")
def synthetic_pe_core_weights(hub_cache_dir):
    """PE-Core-T-16-384 "meta", the smallest tag whose input is not OpenAI's (mean = std = 0.5, bilinear resize,
    squash, 384 x 384), as a hub-cache entry of random weights (fp16), written once per session."""
    from types import SimpleNamespace

    from pretrained_cache import random_weights, write_hub_cache_entry
    weights = {key: value.half() for key, value in random_weights("PE-Core-T-16-384").items()}
    path = write_hub_cache_entry(hub_cache_dir, "PE-Core-T-16-384", "meta", weights)
    return SimpleNamespace(cache_dir=hub_cache_dir, weights=path, model="PE-Core-T-16-384", tag="meta",
                           architecture="PE-Core-T-16-384")


@pytest.fixture
def pe_core_hub_cache(synthetic_pe_core_weights, monkeypatch):
    """The hub cache holding the synthetic PE-Core entry, for the test (use_hub_cache)."""
    use_hub_cache(monkeypatch, synthetic_pe_core_weights.cache_dir)
    return synthetic_pe_core_weights


@pytest.fixture(autouse=True)
def pil_refuses_truncated_images(monkeypatch):
    """PIL's default for every test: DomainBed's datasets module, once imported, makes PIL accept
    truncated images process-wide, which would hide the cut JPEGs that tests feed."""
    from PIL import ImageFile
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)

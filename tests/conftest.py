import os
import sys

import pytest
import torch

from clipood_plugin import CLIPoodLearner

CLASSES = ["dog", "cat", "horse", "golden_retriever"]


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


@pytest.fixture(scope="session")
def synthetic_openai_weights(tmp_path_factory):
    """ViT-B-32 (the smallest model with an OpenAI tag) "openai" as a hub-cache entry of random weights,
    written once per session (fp16 to halve the file; they load into fp32 models)."""
    from types import SimpleNamespace

    from pretrained_cache import random_weights, write_hub_cache_entry
    cache_dir = tmp_path_factory.mktemp("hf_hub_cache")
    weights = {key: value.half() for key, value in random_weights("ViT-B-32-quickgelu").items()}
    path = write_hub_cache_entry(cache_dir, "ViT-B-32", "openai", weights)
    return SimpleNamespace(cache_dir=cache_dir, weights=path, model="ViT-B-32", tag="openai",
                           architecture="ViT-B-32-quickgelu")


@pytest.fixture
def openai_hub_cache(synthetic_openai_weights, monkeypatch):
    """HF_HUB_CACHE points at the synthetic entry: the environment variable, and huggingface_hub's constant
    read from it at import. The hub's offline switch, which load_clip sets, is restored after the test."""
    import huggingface_hub
    cache_dir = str(synthetic_openai_weights.cache_dir)
    monkeypatch.setenv("HF_HUB_CACHE", cache_dir)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", cache_dir)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", huggingface_hub.constants.HF_HUB_OFFLINE)
    return synthetic_openai_weights


@pytest.fixture(autouse=True)
def pil_refuses_truncated_images(monkeypatch):
    """PIL's default for every test: DomainBed's datasets module, once imported, makes PIL accept
    truncated images process-wide, which would hide the cut JPEGs that tests feed."""
    from PIL import ImageFile
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)

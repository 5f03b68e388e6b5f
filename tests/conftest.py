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

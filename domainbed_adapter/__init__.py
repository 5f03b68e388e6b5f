"""DomainBed adapter of CLIPood: the CLIPood, CLIPERM and CLIPZeroShot algorithms and their hparams.

Importing this package needs neither DomainBed nor open_clip. ``register()`` imports DomainBed and
patches it; ``register_loaded()`` (called by the post-import hook of ``clipood_autoregister``) patches
only the DomainBed modules already imported. See docs/domainbed.md.
"""
from .hparams import ALGORITHM_NAMES


def register_loaded():
    from .registration import register_loaded as _register_loaded
    _register_loaded()


def register():
    from .registration import register as _register
    _register()


def load_algorithm(model_pkl):
    """Rebuild a CLIP algorithm from a DomainBed model.pkl; returns (algorithm, the saved dict)."""
    from .checkpoint import load_algorithm as _load_algorithm
    return _load_algorithm(model_pkl)


__all__ = ["ALGORITHM_NAMES", "register", "register_loaded", "load_algorithm"]

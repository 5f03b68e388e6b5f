"""CLIPood as a Dassl trainer (``--trainer CLIPood`` in Dassl's tools/train.py and CoOp's train.py).

``register_loaded()`` is what the post-import hook (clipood_autoregister) calls when dassl.config or
dassl.engine finish importing; it touches only Dassl modules already imported, and is idempotent.
``register()`` imports Dassl and does the same, for code that does not rely on the hook.
"""
import sys

TRAINER_NAME = "CLIPood"


def _initialized(module_name, attribute):
    """The module is imported far enough to hold ``attribute`` (not mid-import)."""
    module = sys.modules.get(module_name)
    return module is not None and hasattr(module, attribute)


def register_loaded():
    if _initialized("dassl.config.defaults", "_C"):
        from .config import add_config_defaults

        add_config_defaults(sys.modules["dassl.config.defaults"]._C)  # every get_cfg_default() clones it
    # the trainer module registers its class where it defines it; when it is already in sys.modules it
    # has done so, or is importing dassl.engine right now and will (then it is only partly defined)
    if _initialized("dassl.engine", "TrainerX") and f"{__name__}.trainer" not in sys.modules:
        from . import trainer  # noqa: F401


def register():
    import dassl.config  # noqa: F401
    import dassl.engine  # noqa: F401

    register_loaded()


def __getattr__(name):  # ``dassl_trainers.CLIPood`` without importing Dassl at package import
    if name == TRAINER_NAME:
        from .trainer import CLIPood

        return CLIPood
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

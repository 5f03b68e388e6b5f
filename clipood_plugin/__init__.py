"""CLIPood (Shu et al., ICML 2023) as a framework-free library: MMS loss, BMA averaging, prompt
features, CLIP loading through open_clip, and one learner object. Knows nothing of DomainBed or Dassl.

Names are imported on first use (PEP 562): the adapters' import hooks run inside every DomainBed and
Dassl import, and ``import clipood_plugin.open_classes`` must not pay for open_clip.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "averaging": ("BetaMovingAverage", "ExponentialMovingAverage", "SWAD", "UniformAverage", "build_averager"),
    "backbone": ("InputAdapter", "MissingPackageError", "WeightsUnavailableError", "load_clip", "weights_image_input"),
    "heads": ("LinearHeadClassifier",),
    "image_input": ("CLIP_MEAN", "CLIP_STD", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_NORMS", "ImageInput",
                    "parse_image_norm"),
    "learner": ("CLIPoodLearner",),
    "loss": ("MarginMetricSoftmax", "margin_metric_softmax"),
    "open_classes": ("BaseNewAccuracy", "harmonic_mean", "num_base_classes"),
    "prompts": ("DEFAULT_TEMPLATES", "PromptEncoder"),
    "saved_model": ("load_learner",),
    "training_step": ("LearnedNothingError", "TrainingDivergedError"),
    "wise_ft": ("pretrained_weights", "wise_ft_accuracy"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

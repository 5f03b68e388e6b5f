"""CLIPood (Shu et al., ICML 2023) as a framework-free library: MMS loss, BMA averaging, prompt
features, CLIP loading through open_clip, and one learner object. Knows nothing of DomainBed or Dassl."""
from .averaging import BetaMovingAverage, ExponentialMovingAverage, build_averager
from .backbone import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, InputAdapter, WeightsUnavailableError, load_clip
from .learner import CLIPoodLearner
from .loss import MarginMetricSoftmax, margin_metric_softmax
from .prompts import DEFAULT_TEMPLATES, PromptEncoder

__version__ = "0.1.0"

__all__ = [
    "BetaMovingAverage", "ExponentialMovingAverage", "build_averager", "CLIP_MEAN", "CLIP_STD", "IMAGENET_MEAN",
    "IMAGENET_STD", "InputAdapter", "WeightsUnavailableError", "load_clip", "CLIPoodLearner",
    "MarginMetricSoftmax", "margin_metric_softmax", "DEFAULT_TEMPLATES", "PromptEncoder",
]

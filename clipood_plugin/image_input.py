"""What a model's image encoder takes (``ImageInput``: size, normalization, resize), as open_clip resolves it
for the weights (``model.visual.preprocess_cfg``), and the named choices of ``image_norm`` for weights that carry
no description of their own (a local file, a random init).

``image_norm`` is spelled:
  "auto"                the weights' own: a tag's preprocessing config, the JSON `clipood export` wrote beside
                        its file; "openai" for any other file and a random init
  "openai"              OpenAI CLIP's mean/std, bicubic resize of the shortest side (open_clip's defaults)
  "siglip"              mean = std = 0.5, bicubic, squash (as SigLIP's webli tags)
  "imagenet"            ImageNet's mean/std, OpenAI's resize
  "M,M,M:S,S,S"         that mean and std (one number per color channel), OpenAI's resize
  "MODEL/TAG"           copied from an open_clip tag, e.g. "PE-Core-B-16/meta" (its mean, std, interpolation
                        and resize mode), for a local file of such weights
  a dict                {"mean", "std", "interpolation", "resize_mode"}: what a learner records in its config

The size is always the model's. Torch-free at import: the settings gate checks spellings before torch loads.
"""
import math
from dataclasses import asdict, dataclass, replace

AUTO = "auto"
INTERPOLATIONS = ("bicubic", "bilinear")
RESIZE_MODES = ("shortest", "squash", "longest")  # open_clip's PreprocessCfg.resize_mode
NORM_FIELDS = ("mean", "std", "interpolation", "resize_mode")
# the least std of a normalization, and why: a std such as 1e-30 passes every other check
MIN_STD = 1e-3
STD_TOO_SMALL = "(x - mean) / std with a smaller one blows the pixels up until every loss is NaN"


@dataclass(frozen=True)
class ImageInput:
    """A model's input: ``size`` (height, width), or None for a choice not yet bound to a model; pixels in
    [0, 1] normalized as (x - mean) / std per channel; resized with ``interpolation``, framed by
    ``resize_mode`` (open_clip's: "shortest" side then a center crop, "squash" to the size, "longest" then pad)."""
    size: object
    mean: tuple
    std: tuple
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    def __post_init__(self):
        if self.size is not None:
            size = (self.size, self.size) if isinstance(self.size, int) else tuple(int(s) for s in self.size)
            object.__setattr__(self, "size", size)
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @classmethod
    def of_model(cls, model):
        """The description open_clip attached to a CLIP model (or its image encoder) it built."""
        return cls.of_cfg(getattr(model, "visual", model).preprocess_cfg)

    @classmethod
    def of_cfg(cls, cfg):
        """From open_clip's preprocessing keys (PreprocessCfg's; ``size`` may be absent)."""
        return cls(cfg.get("size"), cfg["mean"], cfg["std"], cfg["interpolation"], cfg["resize_mode"])

    @property
    def norm(self):
        """The size-free part, as ``image_norm`` spells it in a recorded config (lists: JSON and yacs keep them)."""
        return {"mean": list(self.mean), "std": list(self.std), "interpolation": self.interpolation,
                "resize_mode": self.resize_mode}

    def same_norm(self, other):
        return self.norm == other.norm

    def at(self, size):
        return replace(self, size=size)

    @property
    def preprocess_cfg(self):
        """open_clip's PreprocessCfg keys (``open_clip.transform.PreprocessCfg(**cfg)``)."""
        return {key: value for key, value in asdict(self).items() if key != "size" or value is not None}

    def describe(self):
        size = "" if self.size is None else f"{self.size[0]}x{self.size[1]}, "
        return (f"{size}mean {list(self.mean)}, std {list(self.std)}, {self.interpolation}, "
                f"resize {self.resize_mode}")


# the named choices of image_norm: "openai" is OpenAI's weights' input (and open_clip's defaults)
IMAGE_NORMS = {
    "openai": ImageInput(None, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "siglip": ImageInput(None, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", "squash"),
    "imagenet": ImageInput(None, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
# public names of the statistics: OpenAI CLIP's (CLIP_*) and ImageNet's, as the presets hold them
CLIP_MEAN, CLIP_STD = IMAGE_NORMS["openai"].mean, IMAGE_NORMS["openai"].std
IMAGENET_MEAN, IMAGENET_STD = IMAGE_NORMS["imagenet"].mean, IMAGE_NORMS["imagenet"].std
SPELLINGS = (f"{AUTO!r}, one of {sorted(IMAGE_NORMS)}, 'M,M,M:S,S,S' (mean and std per color channel), "
             "'MODEL/TAG' (an open_clip tag's), or a dict of mean, std, interpolation, resize_mode")


def _channels(values):
    """Three finite numbers (one per color channel) from "a,b,c" or a sequence, else None."""
    try:
        values = tuple(float(v) for v in (values.split(",") if isinstance(values, str) else values))
    except (TypeError, ValueError):
        return None
    return values if len(values) == 3 and all(math.isfinite(v) for v in values) else None


def _checked(mean, std, interpolation="bicubic", resize_mode="shortest"):
    """The ImageInput (without size) of these values, or None where one is not allowed."""
    mean, std = _channels(mean), _channels(std)
    if mean is None or std is None or interpolation not in INTERPOLATIONS \
            or resize_mode not in RESIZE_MODES:
        return None
    return ImageInput(None, mean, std, interpolation, resize_mode)


def tag_spelling(value):
    """(model name, tag) of a "MODEL/TAG" spelling, else None (CoOp-style names keep their slash: "ViT-B/16/openai")."""
    if not isinstance(value, str) or "/" not in value or ":" in value:
        return None
    model, tag = value.rsplit("/", 1)
    return (model, tag) if model and tag else None


def parse_image_norm(value):
    """The ImageInput (without size) an ``image_norm`` spelling names; None for "auto" and for a "MODEL/TAG"
    spelling (which only open_clip can look up: ``backbone.tag_image_input``). Raises ValueError for a
    spelling that names nothing."""
    if isinstance(value, str) and (value == AUTO or tag_spelling(value)):
        return None
    if isinstance(value, str) and value in IMAGE_NORMS:
        return IMAGE_NORMS[value]
    chosen = None
    if isinstance(value, dict) and set(value) == set(NORM_FIELDS):
        chosen = _checked(**value)
    elif isinstance(value, str) and value.count(":") == 1:
        chosen = _checked(*value.split(":"))
    if chosen is None:
        raise ValueError(f"must be {SPELLINGS}")
    if min(chosen.std) < MIN_STD:
        raise ValueError(f"must be {SPELLINGS}, and a std must be >= {MIN_STD:g} ({STD_TOO_SMALL})")
    return chosen


def image_norm_problem(value):
    """The settings gate's check of an ``image_norm``: what is wrong, or None."""
    try:
        parse_image_norm(value)
    except ValueError as error:
        return str(error)
    return None

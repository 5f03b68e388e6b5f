"""CLIP loading through open_clip, the offline ``clipood-tiny`` model, and exact input adaptation."""
import difflib
import json
import os
import socket
import urllib.parse
import zipfile
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torchvision import transforms

from .settings import TINY_MODEL

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

QUICK_GELU_SUFFIX = "-quickgelu"  # open_clip's name for a model's QuickGELU variant
# the JSON `clipood export` writes beside its weights, and the keys that name the model they fit
EXPORT_METADATA_SUFFIX = ".json"
EXPORT_FORMAT_KEY, EXPORT_MODEL_KEY = "clipood_export", "open_clip_model"
# CoOp / openai-CLIP style names -> open_clip names (resolve_architecture picks the QuickGELU variant)
MODEL_ALIASES = {
    "ViT-B/16": "ViT-B-16", "ViT-B/32": "ViT-B-32", "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336", "RN50": "RN50", "RN101": "RN101",
}
_CONFIG_DIR = Path(__file__).parent / "model_configs"
_REACHABILITY_TIMEOUT_S = 3.0


class WeightsUnavailableError(RuntimeError):
    """Pretrained CLIP weights are neither cached nor downloadable. The fix is worded for the Python API;
    each front end words it with its own option through ``worded_for``."""

    def __init__(self, model_name, tag, pass_file=None, random_init=None):
        super().__init__(model_name, tag, pass_file, random_init)
        self.model_name, self.tag = model_name, tag
        self.pass_file = pass_file or f"pretrained='/path/to/{model_name}.bin'"
        self.random_init = random_init or f"model_name={TINY_MODEL!r} with pretrained=None"

    def __str__(self):
        return (f"pretrained weights {self.model_name}/{self.tag} are not in the local cache and cannot be downloaded "
                "(no network). Download the open_clip checkpoint on a machine with network access and pass its path "
                f"as {self.pass_file} with the model named {self.model_name!r} (the architecture of those weights); "
                f"for an offline smoke test use {self.random_init}.")

    def worded_for(self, pass_file, random_init):
        """The same error with the fix in a front end's terms: how to pass a file (``{path}`` in it stands for
        the file) and how to pick the random-init tiny model."""
        return type(self)(self.model_name, self.tag, pass_file.replace("{path}", f"/path/to/{self.model_name}.bin"),
                          random_init)


def _register_model_configs():
    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


def shipped_model_config(model_name: str):
    """The config file this package ships for ``model_name`` (open_clip itself does not know it), else None."""
    path = _CONFIG_DIR / f"{model_name}.json"
    return path if path.is_file() else None


def resolve_model_name(model_name: str) -> str:
    """Map CoOp-style names ("ViT-B/16") to open_clip's; reject unknown names with suggestions."""
    _register_model_configs()
    name = MODEL_ALIASES.get(model_name, model_name)
    known = open_clip.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=4)
        raise ValueError(f"unknown CLIP model {model_name!r}; did you mean one of {close}? "
                         f"(any name from open_clip.list_models(), a CoOp-style name from {sorted(MODEL_ALIASES)}, "
                         f"or {TINY_MODEL!r} for the tiny random-init test model)")
    return name


def _looks_like_path(pretrained: str) -> bool:
    return os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def is_torchscript_archive(path) -> bool:
    """OpenAI's original CLIP files (ViT-B-16.pt, ...) are TorchScript archives: a zip with constants.pkl."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(entry.count("/") == 1 and entry.endswith("/constants.pkl") for entry in archive.namelist())


def export_metadata_path(weights_path) -> Path:
    return Path(weights_path).with_suffix(EXPORT_METADATA_SUFFIX)


def exported_model_name(weights_path):
    """The open_clip model a `clipood export` file was written for (from the JSON beside it), else None."""
    metadata = export_metadata_path(weights_path)
    if not metadata.is_file():
        return None
    try:
        recorded = json.loads(metadata.read_text())
    except (ValueError, UnicodeDecodeError):
        return None  # someone else's file of that name
    return recorded.get(EXPORT_MODEL_KEY) if isinstance(recorded, dict) and EXPORT_FORMAT_KEY in recorded else None


def resolve_architecture(model_name: str, pretrained=None) -> str:
    """The open_clip model name whose architecture fits the weights ``pretrained`` names.

    Weights trained with QuickGELU get the model's "-quickgelu" variant: every tag whose open_clip
    pretrained config says quick_gelu (OpenAI's among them), and OpenAI's TorchScript archives. open_clip
    itself builds nn.GELU for ("ViT-B-16", "openai") and only warns. A plain state-dict file carries no
    architecture: the name given is used (OpenAI weights saved as a state dict: "ViT-B-16-quickgelu"),
    and a file `clipood export` wrote must be given the model name recorded beside it.
    """
    name = resolve_model_name(model_name)
    if pretrained is None:
        return name
    pretrained = str(pretrained)
    if os.path.isfile(pretrained):
        exported_as = exported_model_name(pretrained)
        if exported_as is not None and exported_as != name:
            raise ValueError(f"{pretrained} was exported for open_clip model {exported_as!r} (see "
                             f"{export_metadata_path(pretrained)}); build with model name {exported_as!r}, "
                             f"not {model_name!r}")
        quick_gelu = is_torchscript_archive(pretrained)
    else:
        quick_gelu = open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu", False)
    if not quick_gelu or open_clip.get_model_config(name).get("quick_gelu", False):
        return name
    variant = name + QUICK_GELU_SUFFIX
    if variant not in open_clip.list_models():
        raise ValueError(f"the weights {pretrained!r} were trained with QuickGELU, but open_clip has no model "
                         f"{variant!r} to build {name} with it")
    return variant


def _load_torchscript_archive(model, path):
    """OpenAI's TorchScript file into an open_clip model, as open_clip's OpenAI loader reads it (torch.jit.load:
    open_clip's own torch.load(weights_only=True) refuses TorchScript). Only load archives you trust."""
    state = torch.jit.load(path, map_location="cpu").state_dict()
    for key in ("input_resolution", "context_length", "vocab_size"):  # OpenAI's metadata, not weights
        state.pop(key, None)
    model.load_state_dict(state)


def _weights_location(model_name: str, tag: str):
    """Where open_clip can get the tag's weights: "hub-cache", "url-cache", "network", or None (nowhere)."""
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    hub = cfg.get("hf_hub", "")
    if hub:
        import huggingface_hub
        repo_id, filename = os.path.split(hub)
        for candidate in (Path(filename or "open_clip_pytorch_model.bin").with_suffix(".safetensors").name,
                          filename or "open_clip_pytorch_model.bin"):
            if isinstance(huggingface_hub.try_to_load_from_cache(repo_id, candidate), str):
                return "hub-cache"
        host = urllib.parse.urlparse(huggingface_hub.constants.ENDPOINT).hostname
    else:
        url = cfg.get("url", "")
        if os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))):
            return "url-cache"
        host = urllib.parse.urlparse(url).hostname
    try:
        socket.create_connection((host, 443), timeout=_REACHABILITY_TIMEOUT_S).close()
        return "network"
    except OSError:
        return None


def pretrained_weights_available(model_name: str, tag: str) -> bool:
    """True when open_clip can get the tag's weights: already in the local cache, or its host answers."""
    return _weights_location(model_name, tag) is not None


def load_clip(model_name="ViT-B-16", pretrained="openai", device=None, precision="fp32"):
    """Build a CLIP model through open_clip; returns (model, preprocess_train, preprocess_val, tokenizer).

    ``pretrained`` is an open_clip tag ("openai", "laion2b_s34b_b88k", ...), a local checkpoint file
    (an open_clip state dict, or one of OpenAI's TorchScript archives), or None for random init. The
    architecture follows the weights (``resolve_architecture``: QuickGELU where they were trained with it).
    Weights that are neither cached nor reachable fail fast with a message on how to use a local file
    instead. ``preprocess_train`` is the paper's augmentation (RandomResizedCrop scale 0.7-1 and horizontal
    flip); ``preprocess_val`` is open_clip's resize + center crop.

    ``precision``: "fp32", or "fp16", the storage openai CLIP's build_model gives the model on a GPU (its
    model.py convert_weights: fp16 convolution, linear and attention weights and the projections) with its
    LayerNorm computed in fp32, as open_clip's precision "fp16" builds it; the authors train in it.
    """
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
    name = resolve_architecture(model_name, pretrained)
    weights_file = archive = None
    if pretrained is not None:
        pretrained = str(pretrained)
        if os.path.isfile(pretrained):
            weights_file = pretrained
            if is_torchscript_archive(pretrained):
                archive, pretrained = pretrained, None
        elif _looks_like_path(pretrained):
            raise FileNotFoundError(f"CLIP checkpoint file not found: {pretrained}")
        elif not open_clip.pretrained.is_pretrained_cfg(name, pretrained):
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise ValueError(f"{pretrained!r} is neither a file nor an open_clip pretrained tag of {name}; "
                             f"its tags are {tags}" + (" (use pretrained=None for random init)" if not tags else ""))
        else:
            location = _weights_location(name, pretrained)
            if location is None:
                raise WeightsUnavailableError(name, pretrained)
            if location == "hub-cache":  # load from the cache without the hub's network retries
                import huggingface_hub
                huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        model, _, preprocess_val = open_clip.create_model_and_transforms(name, pretrained=pretrained,
                                                                         device=device or "cpu", precision=precision)
        if archive is not None:
            _load_torchscript_archive(model, archive)
    except (RuntimeError, AssertionError, KeyError) as error:  # how open_clip's loaders meet a misfit
        if weights_file is None:
            raise
        detail = str(error).strip().splitlines()[-1].strip()
        raise ValueError(f"the weights in {weights_file} do not fit open_clip model {name!r} ({detail}); "
                         "name the model they were saved from") from error
    if precision == "fp32":
        model.float()
    tokenizer = open_clip.get_tokenizer(name)
    image_size = image_size_of(model.visual)
    preprocess_train = transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=(0.7, 1.0), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(CLIP_MEAN, CLIP_STD),
    ])
    return model, preprocess_train, preprocess_val, tokenizer


def image_size_of(image_encoder) -> int:
    size = image_encoder.image_size
    return size[0] if isinstance(size, (tuple, list)) else int(size)


class InputAdapter(torch.nn.Module):
    """Maps images normalized with (source_mean, source_std) at any resolution to CLIP's input exactly.

    One- and two-channel images get their missing planes first (gray repeated; an empty third plane).

    x_clip = (x * source_std + source_mean - CLIP_MEAN) / CLIP_STD is one per-channel affine map,
    then a bicubic resize to the encoder's resolution (a no-op when sizes already match).
    """

    def __init__(self, image_size, source_mean=CLIP_MEAN, source_std=CLIP_STD):
        super().__init__()
        source_mean, source_std = torch.tensor(source_mean), torch.tensor(source_std)
        clip_mean, clip_std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
        self.image_size = int(image_size)
        self.identity_norm = bool(torch.equal(source_mean, clip_mean) and torch.equal(source_std, clip_std))
        self.register_buffer("scale", (source_std / clip_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((source_mean - clip_mean) / clip_std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images):
        if images.ndim != 4 or images.shape[1] not in (1, 2, 3):
            raise ValueError(f"expected images of shape [batch, channels (1-3), H, W], got {tuple(images.shape)}")
        if images.shape[1] == 1:  # grayscale
            images = images.expand(-1, 3, -1, -1)
        elif images.shape[1] == 2:  # two color planes (e.g. ColoredMNIST): an empty third one
            images = torch.cat([images, torch.zeros_like(images[:, :1])], dim=1)
        if not self.identity_norm:
            images = torch.addcmul(self.shift, images, self.scale)
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bicubic",
                                   align_corners=False, antialias=True)
        return images

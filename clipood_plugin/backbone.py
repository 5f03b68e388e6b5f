"""CLIP loading through open_clip, the offline ``clipood-tiny`` model, and exact input adaptation."""
import contextlib
import difflib
import importlib.util
import json
import logging
import os
import pickle
import socket
import urllib.parse
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F

from .image_input import AUTO, IMAGE_NORMS, ImageInput, parse_image_norm, tag_spelling
from .image_transforms import input_transforms, pixel_normalization
from .errors import DataError
from .files import unreadable_checkpoint
from .packages import MissingPackageError, import_open_clip
from .settings import TINY_MODEL, SettingError, check_settings, names_a_file

open_clip = import_open_clip()  # imports torchvision: a torchvision that does not fit torch is one line here

QUICK_GELU_SUFFIX = "-quickgelu"  # open_clip's name for a model's QuickGELU variant
# the JSON `clipood export` writes beside its weights, and the keys that name the model they fit
EXPORT_METADATA_SUFFIX = ".json"
EXPORT_FORMAT_KEY, EXPORT_MODEL_KEY, EXPORT_IMAGE_INPUT_KEY = "clipood_export", "open_clip_model", "image_input"
# CoOp / openai-CLIP style names -> open_clip names (resolve_architecture picks the QuickGELU variant)
MODEL_ALIASES = {
    "ViT-B/16": "ViT-B-16", "ViT-B/32": "ViT-B-32", "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336", "RN50": "RN50", "RN101": "RN101",
}
_CONFIG_DIR = Path(__file__).parent / "model_configs"
_REACHABILITY_TIMEOUT_S = 3.0


class WeightsUnavailableError(DataError, RuntimeError):
    """Pretrained CLIP weights are neither cached nor downloadable. The fix is worded for the Python API;
    each front end words it with its own options through ``worded_for``. Besides the weights file, it names
    what else such a file does not bring: the tag's input where it is not OpenAI's (a local file gets OpenAI's
    unless told), and a Hugging Face tokenizer (SigLIP's), which must be in the Hugging Face cache."""

    def __init__(self, model_name, tag, pass_file=None, random_init=None, choose_input=None):
        RuntimeError.__init__(self, model_name, tag, pass_file, random_init, choose_input)
        self.model_name, self.tag = model_name, tag
        self.pass_file = pass_file or f"pretrained='/path/to/{model_name}.bin'"
        self.random_init = random_init or f"model_name={TINY_MODEL!r} with pretrained=None"
        self.choose_input = choose_input or "image_norm='{norm}'"

    def __str__(self):
        return (f"pretrained weights {self.model_name}/{self.tag} are not in the local cache and cannot be downloaded "
                "(no network). Download the open_clip checkpoint on a machine with network access and pass its path "
                f"as {self.pass_file} with the model named {self.model_name!r} (the architecture of those weights)"
                + "".join(f", {need}" for need in self._offline_needs())
                + f"; for an offline smoke test use {self.random_init}.")

    def _offline_needs(self):
        own_input = tag_image_input(self.model_name, self.tag)
        if own_input != IMAGE_NORMS["openai"]:
            yield (f"with {self.choose_input.replace('{norm}', f'{self.model_name}/{self.tag}')} (the input these "
                   f"weights were trained on: {own_input.describe()}; a file does not say it, and gets OpenAI's)")
        tokenizer = open_clip.get_model_config(self.model_name)["text_cfg"].get("hf_tokenizer_name")
        if tokenizer:
            yield (f"and its tokenizer {tokenizer!r} from the Hugging Face cache: run open_clip.get_tokenizer"
                   f"({self.model_name!r}) there too, copy that Hugging Face cache (HF_HUB_CACHE) here and set "
                   "HF_HUB_OFFLINE=1")

    def worded_for(self, pass_file, random_init, choose_input=None):
        """The same error with the fix in a front end's terms: how to pass a file (``{path}`` in it stands for
        the file), how to pick the random-init tiny model, and how to choose the input (``{norm}`` in it
        stands for the value)."""
        return type(self)(self.model_name, self.tag, pass_file.replace("{path}", f"/path/to/{self.model_name}.bin"),
                          random_init, choose_input)


def check_model_packages(model_name: str):
    """Raise MissingPackageError unless the packages ``model_name``'s towers and tokenizer need are installed.

    open_clip imports them only when it builds such a model: ``transformers`` for a Hugging Face text tower
    (``hf_model_name``) or tokenizer (``hf_tokenizer_name``: SigLIP, SigLIP2, ...), ``timm`` for a timm image
    tower (EVA02, SigLIP, ConvNeXt, MobileCLIP; open_clip installs it). Checked before the model is built.
    """
    config = open_clip.get_model_config(model_name) or {}
    text, vision = config.get("text_cfg", {}), config.get("vision_cfg", {})
    hugging_face = text.get("hf_model_name") or text.get("hf_tokenizer_name")
    for package, part in (("transformers", hugging_face and f"its text side is Hugging Face's {hugging_face!r}"),
                          ("timm", vision.get("timm_model_name") and
                           f"its image tower is timm's {vision.get('timm_model_name')!r}")):
        if part and importlib.util.find_spec(package) is None:
            raise MissingPackageError(f"open_clip model {model_name!r} needs the package `{package}` ({part}), "
                                      f"which is not installed: pip install {package}")


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


def is_torchscript_archive(path) -> bool:
    """OpenAI's original CLIP files (ViT-B-16.pt, ...) are TorchScript archives: a zip with constants.pkl."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(entry.count("/") == 1 and entry.endswith("/constants.pkl") for entry in archive.namelist())


def export_metadata_path(weights_path) -> Path:
    return Path(weights_path).with_suffix(EXPORT_METADATA_SUFFIX)


def export_metadata(weights_path):
    """What `clipood export` recorded beside a weights file (the JSON's content: model name, class names, the
    run's settings, the pretrained weights it started from, the model's input), else None."""
    metadata = export_metadata_path(weights_path)
    if not metadata.is_file():
        return None
    try:
        recorded = json.loads(metadata.read_text())
    except (ValueError, UnicodeDecodeError):
        return None  # someone else's file of that name
    return recorded if isinstance(recorded, dict) and EXPORT_FORMAT_KEY in recorded else None


def exported_model_name(weights_path):
    """The open_clip model a `clipood export` file was written for (from the JSON beside it), else None."""
    return (export_metadata(weights_path) or {}).get(EXPORT_MODEL_KEY)


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


def _tokenizer(name):
    """open_clip's tokenizer for the model; a Hugging Face one (SigLIP's) that is neither in the hub's cache nor
    downloadable is one line on how to get it."""
    try:
        return open_clip.get_tokenizer(name)
    except OSError as error:  # transformers' words for "not cached, no network"
        repo = open_clip.get_model_config(name)["text_cfg"].get("hf_tokenizer_name", "")
        raise FileNotFoundError(f"the tokenizer of {name} ({repo!r} on the Hugging Face hub) is not in the local "
                                "cache and cannot be downloaded (no network): run open_clip.get_tokenizer"
                                f"({name!r}) once on a machine with network access, copy its Hugging Face "
                                "cache (HF_HUB_CACHE) here and set HF_HUB_OFFLINE=1") from error


def tag_image_input(model_name: str, tag: str) -> ImageInput:
    """The input open_clip gives the weights of an open_clip tag, without a size: the tag's pretrained config
    over open_clip's defaults, merged as open_clip's factory merges them."""
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        raise SettingError(f"image_norm {model_name}/{tag}: open_clip has no tag {tag!r} of {model_name}; its tags "
                           f"are {open_clip.list_pretrained_tags_by_model(model_name)}")
    return ImageInput.of_cfg(merge_preprocess_dict(PreprocessCfg(), cfg)).at(None)


def _own_image_input(name, pretrained):
    """The input the weights ``pretrained`` describe themselves (a tag's config; the JSON `clipood export`
    wrote beside its file), without a size; None for other files and a random init."""
    if pretrained is None:
        return None
    if os.path.isfile(pretrained):
        recorded = (export_metadata(pretrained) or {}).get(EXPORT_IMAGE_INPUT_KEY)
        return ImageInput.of_cfg(recorded).at(None) if recorded else None
    return tag_image_input(name, pretrained) if open_clip.pretrained.is_pretrained_cfg(name, pretrained) else None


def weights_image_input(model_name: str, pretrained=None, image_norm=AUTO) -> ImageInput:
    """The input of the model ``load_clip`` builds from these arguments, found without building it: the
    weights' own description where they have one (a tag, an export), else the one ``image_norm`` names
    ("auto": OpenAI's), at the image size of the model's config.

    An ``image_norm`` other than the weights' own is refused: they were trained on their own input, and a
    run that fine-tunes or evaluates them on another would silently be a different experiment."""
    check_settings({"image_norm": image_norm})
    name = resolve_architecture(model_name, pretrained)
    pretrained = None if pretrained is None else str(pretrained)
    spelled_tag = tag_spelling(image_norm)
    chosen = tag_image_input(resolve_model_name(spelled_tag[0]), spelled_tag[1]) if spelled_tag \
        else parse_image_norm(image_norm)
    own = _own_image_input(name, pretrained)
    if own is not None and chosen is not None and not own.same_norm(chosen):
        raise SettingError(f"image_norm {image_norm!r} ({chosen.describe()}) is not the input the weights "
                           f"{pretrained!r} were trained on and describe ({own.describe()}); drop image_norm (or "
                           "give 'auto'): it chooses the input of weights that have no description (a local file, "
                           "random init)")
    return (own or chosen or IMAGE_NORMS["openai"]).at(open_clip.get_model_config(name)["vision_cfg"]["image_size"])


def load_clip(model_name="ViT-B-16", pretrained="openai", device=None, precision="fp32", image_norm=AUTO):
    """Build a CLIP model through open_clip; returns (model, preprocess_train, preprocess_val, tokenizer).

    ``pretrained`` is an open_clip tag ("openai", "laion2b_s34b_b88k", ...), a local checkpoint file
    (an open_clip state dict, or one of OpenAI's TorchScript archives), or None for random init. The
    architecture follows the weights (``resolve_architecture``: QuickGELU where they were trained with it).
    Weights that are neither cached nor reachable fail fast with a message on how to use a local file
    instead.

    The model's input (``ImageInput.of_model(model)``: size, mean, std, interpolation, resize mode) is the
    weights' own where they describe it (a tag's preprocessing config, an export's JSON), else the one
    ``image_norm`` names (``weights_image_input``; "auto": OpenAI's). ``preprocess_train`` is the paper's
    augmentation and ``preprocess_val`` open_clip's preprocessing, both of that input (``input_transforms``).

    ``precision``: "fp32", or "fp16", the storage openai CLIP's build_model gives the model on a GPU (its
    model.py convert_weights: fp16 convolution, linear and attention weights and the projections) with its
    LayerNorm computed in fp32, as open_clip's precision "fp16" builds it; the authors train in it.
    """
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
    name = resolve_architecture(model_name, pretrained)
    check_model_packages(name)
    image_input = weights_image_input(name, pretrained, image_norm)
    weights_file = archive = None
    if pretrained is not None:
        pretrained = str(pretrained)
        if os.path.isfile(pretrained):
            weights_file = pretrained
            if is_torchscript_archive(pretrained):
                archive, pretrained = pretrained, None
        elif names_a_file(pretrained):
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
    tokenizer = _tokenizer(name)
    # the tiny model's random init is what was asked for; an archive's weights are loaded right after
    expected_random_init = pretrained is None and (name == TINY_MODEL or archive is not None)
    try:
        with _without_random_init_warning(name) if expected_random_init else contextlib.nullcontext():
            model = open_clip.create_model(name, pretrained=pretrained, device=device or "cpu", precision=precision,
                                           force_preprocess_cfg=image_input.at(None).preprocess_cfg)
        if archive is not None:
            _load_torchscript_archive(model, archive)
    except (EOFError, pickle.UnpicklingError) as error:  # torch.load of an empty or foreign file
        if weights_file is None:
            raise
        raise unreadable_checkpoint(weights_file, "give the CLIP weights file (an open_clip state dict or an OpenAI "
                                                  "archive)") from error
    except (RuntimeError, AssertionError, KeyError) as error:  # how open_clip's loaders meet a misfit
        if weights_file is None:
            raise
        detail = str(error).strip().splitlines()[-1].strip()
        raise ValueError(f"the weights in {weights_file} do not fit open_clip model {name!r} ({detail}); "
                         "name the model they were saved from") from error
    if precision == "fp32":
        model.float()
    preprocess_train, preprocess_val = input_transforms(ImageInput.of_model(model))
    return model, preprocess_train, preprocess_val, tokenizer


@contextlib.contextmanager
def _without_random_init_warning(name):
    """Leave out open_clip's "No pretrained weights loaded for model NAME" (a root-logger warning), and only it."""
    warning = f"No pretrained weights loaded for model '{name}'"

    def keep(record):
        return not str(record.msg).startswith(warning)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def image_size_of(image_encoder) -> int:
    size = image_encoder.image_size
    return size[0] if isinstance(size, (tuple, list)) else int(size)


class InputAdapter(torch.nn.Module):
    """Maps images at any resolution to a model's input (``image_input``) exactly: uint8 pixels (0-255), or
    floats normalized with (source_mean, source_std), which default to the model's own statistics.

    One- and two-channel images get their missing planes first (gray repeated; an empty third plane).

    x_model = (x * source_std + source_mean - mean) / std for floats, x / (255 std) - mean / std for uint8 pixels
    (the source statistics do not apply to them), is one per-channel affine map, then a resize to the input's
    size with its interpolation (a no-op when sizes already match). The images come framed by the front end's
    own pipeline (e.g. DomainBed's 224 x 224 crops): they are resized as they are, not cropped.
    """

    def __init__(self, image_input: ImageInput, source_mean=None, source_std=None):
        super().__init__()
        mean, std = torch.tensor(image_input.mean), torch.tensor(image_input.std)
        source_mean = mean if source_mean is None else torch.tensor(source_mean, dtype=torch.float32)
        source_std = std if source_std is None else torch.tensor(source_std, dtype=torch.float32)
        self.size, self.mode = image_input.size, image_input.interpolation
        self.identity_norm = bool(torch.equal(source_mean, mean) and torch.equal(source_std, std))
        self.register_buffer("scale", (source_std / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((source_mean - mean) / std).view(1, 3, 1, 1), persistent=False)
        pixel_shift, pixel_scale = pixel_normalization(mean, std)
        self.register_buffer("pixel_scale", pixel_scale, persistent=False)
        self.register_buffer("pixel_shift", pixel_shift, persistent=False)

    def forward(self, images):
        if images.ndim != 4 or images.shape[1] not in (1, 2, 3):
            raise ValueError(f"expected images of shape [batch, channels (1-3), H, W], got {tuple(images.shape)}")
        if images.shape[1] == 1:  # grayscale
            images = images.expand(-1, 3, -1, -1)
        elif images.shape[1] == 2:  # two color planes (e.g. ColoredMNIST): an empty third one
            images = torch.cat([images, torch.zeros_like(images[:, :1])], dim=1)
        if images.dtype == torch.uint8:
            images = torch.addcmul(self.pixel_shift, images, self.pixel_scale)
        elif not self.identity_norm:
            images = torch.addcmul(self.shift, images, self.scale)
        if images.shape[-2:] != self.size:
            images = F.interpolate(images, size=self.size, mode=self.mode, align_corners=False, antialias=True)
        return images

"""`clipood export`: a fine-tuned model as one open_clip checkpoint.

CLIPood trains the image tower only, so every checkpoint format of this package (the learner state in
`clipood train`'s model.pt, DomainBed's model.pkl, Dassl's checkpoints) holds the averaged image tower
and cached text features, not the text tower. The export pairs that image tower with the text tower
and logit scale of the pretrained weights the run started from, into a complete open_clip CLIP state
dict, with a JSON beside it naming the open_clip model it fits. Checkpoints are read as data
(torch.load(weights_only=True)); no framework is imported.
"""
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from .backbone import (EXPORT_FORMAT_KEY, EXPORT_METADATA_SUFFIX, EXPORT_MODEL_KEY, WeightsUnavailableError,
                       export_metadata_path, load_clip, resolve_architecture)
from .files import load_checkpoint, save_tensors, write_json
from .learner import CHECKPOINT_FORMAT
from .prompts import PromptEncoder
from .settings import DataError

EXPORT_FORMAT = 1
# where each front end keeps the learner's state inside its checkpoint
LEARNER_STATE_LOCATIONS = (
    ("clipood train model.pt", ()),
    ("clipood train checkpoint.pt", ("learner",)),
    ("DomainBed model.pkl", ("model_dict", "clipood_learner")),
    ("Dassl checkpoint", ("state_dict", "learner")),
)
# text features of this many classes, recomputed from the pretrained text tower, must match the saved ones
CHECKED_CLASSES = 8
MIN_TEXT_COSINE = 0.99  # far above what other weights give, below fp32 drift between devices


class ExportError(ValueError):
    """The checkpoint cannot be exported (one line naming why and the fix)."""


def read_learner_state(checkpoint_path):
    """(learner state, name of the format) from any of the checkpoint formats, read as data."""
    checkpoint = load_checkpoint(checkpoint_path, numpy_scalars=True)  # DomainBed's random hparams: numpy floats
    for source, keys in LEARNER_STATE_LOCATIONS:
        state = checkpoint
        for key in keys:
            state = state.get(key) if isinstance(state, dict) else None
        if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT and "config" in state:
            return state, source
    raise ExportError(f"{checkpoint_path} holds no CLIPood learner: export takes a `clipood train` model.pt, a "
                      "DomainBed model.pkl of CLIPood/CLIPERM, or a checkpoint of Dassl's CLIPood trainer")


def _check_exportable(state, checkpoint_path):
    config = state["config"]
    if config["zero_shot"]:
        raise ExportError(f"{checkpoint_path} is a zero-shot model (never trained): use open_clip's "
                          f"{config['model_name']!r} with pretrained={config['pretrained']!r} directly")
    if config.get("head", "text") != "text":
        raise ExportError(f"{checkpoint_path} was trained with a linear head: open_clip's model classifies with "
                          "the text tower, which would not give this run's predictions; export takes text-head runs")
    if config["pretrained"] is None:
        raise ExportError(f"{checkpoint_path} was trained from a random init (pretrained None): there is no "
                          "pretrained text tower to pair with its image tower; export needs a run started from "
                          "a pretrained tag or file")


def _check_text_tower(clip_model, tokenizer, state, pretrained):
    """The rebuilt text tower must reproduce the run's text features: else the weights are not the run's."""
    names = state["class_names"][:CHECKED_CLASSES]
    features = PromptEncoder(clip_model, tokenizer, state["config"]["templates"]).encode(names)
    cosine = F.cosine_similarity(features, state["text_features"][:len(names)].float(), dim=-1).min().item()
    if not cosine >= MIN_TEXT_COSINE:
        raise ExportError(f"the text tower of {pretrained!r} does not give the run's text features (cosine "
                          f"{cosine:.3f}): these are not the weights the run started from; pass those with "
                          "--pretrained FILE")


def export_open_clip(checkpoint_path, out_path, pretrained=None):
    """Write ``out_path`` (an open_clip state dict) and its JSON; returns the JSON's content.

    ``pretrained`` replaces the weights the run recorded (e.g. a local file of the tag it used).
    """
    checkpoint_path, out_path = Path(checkpoint_path), Path(out_path)
    if out_path.suffix == EXPORT_METADATA_SUFFIX:
        raise ExportError(f"OUT {out_path} would be overwritten by its own metadata: name it e.g. model.pt")
    state, source = read_learner_state(checkpoint_path)
    _check_exportable(state, checkpoint_path)
    config = state["config"]
    pretrained = config["pretrained"] if pretrained is None else str(pretrained)
    if out_path.resolve() in {checkpoint_path.resolve(), Path(pretrained).resolve()}:
        raise ExportError(f"OUT {out_path} is an input of the export (the checkpoint or the pretrained weights): "
                          "write it elsewhere")
    architecture = resolve_architecture(config["model_name"], pretrained)
    if architecture != config["model_name"]:
        raise ExportError(f"{checkpoint_path} was trained as {config['model_name']!r}, but its weights "
                          f"{pretrained!r} are {architecture!r}: the run predates QuickGELU for such weights and "
                          "fine-tuned another activation than they were trained with; train it again")
    try:
        clip_model, _, _, tokenizer = load_clip(architecture, pretrained)
    except (WeightsUnavailableError, FileNotFoundError) as error:
        raise ExportError(f"{error} (export needs the weights the run started from: pass them with "
                          "--pretrained FILE)") from error
    _check_text_tower(clip_model, tokenizer, state, pretrained)
    clip_model.visual.load_state_dict(state["inference_encoder"])
    if config["logit_scale"] is not None:  # the scale the learner predicted with
        clip_model.logit_scale.data.fill_(math.log(config["logit_scale"]))
    weights = clip_model.state_dict()
    bad = [key for key, value in weights.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise ExportError(f"{checkpoint_path} has non-finite weights ({bad[0]}, ...): the run diverged")

    metadata = {EXPORT_FORMAT_KEY: EXPORT_FORMAT, EXPORT_MODEL_KEY: config["model_name"],
                "source_checkpoint": str(checkpoint_path.resolve()), "source_format": source,
                "pretrained": pretrained, "step": state["step"], "class_names": list(state["class_names"]),
                "training": config}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(weights, out_path)
    write_json(metadata, export_metadata_path(out_path))
    return metadata


def main(checkpoint, out, pretrained=None):
    """`clipood export`: prints the open_clip model name to load OUT with; 2 on bad input."""
    try:
        metadata = export_open_clip(checkpoint, out, pretrained)
    except (ValueError, DataError, WeightsUnavailableError, FileNotFoundError) as error:  # ExportError: a ValueError
        print(f"clipood export: error: {error}", file=sys.stderr)
        return 2
    model_name = metadata[EXPORT_MODEL_KEY]
    print(f"open_clip model: {model_name}\n"
          f"load it with: open_clip.create_model_and_transforms({model_name!r}, pretrained={str(out)!r})\n"
          f"metadata (source, training settings, class names): {export_metadata_path(out)}")
    return 0

"""`clipood export`: a fine-tuned model as one open_clip checkpoint.

CLIPood trains the image tower only, so every checkpoint format of this package (the learner state in
`clipood train`'s model.pt, DomainBed's model.pkl, Dassl's checkpoints) holds the averaged image tower
and cached text features, not the text tower. The export pairs that image tower with the text tower
and logit scale of the pretrained weights the run started from, into a complete open_clip CLIP state
dict, with a JSON beside it naming the open_clip model it fits and the input it takes (``image_input``: size,
mean, std, interpolation, resize mode, which open_clip's own preprocessing for the file then needs to be
told, and which this package's loaders read from the JSON). Checkpoints are read as data
(torch.load(weights_only=True)); no framework is imported.
"""
import math
from pathlib import Path

import torch

from .backbone import (EXPORT_FORMAT_KEY, EXPORT_IMAGE_INPUT_KEY, EXPORT_METADATA_SUFFIX, EXPORT_MODEL_KEY,
                       MissingPackageError, WeightsUnavailableError, export_metadata_path, exported_model_name,
                       load_clip, resolve_architecture, shipped_model_config)
from .checkpoint_format import UNRECORDED_IMAGE_NORM, not_of_this_package, read_learner_state
from .command_line import fail
from .files import make_dirs, save_tensors, write_json
from .image_input import ImageInput
from .pretrained_check import check_run_weights
from .prompts import PromptEncoder
from .settings import DataError
from .write_guard import check_writes

EXPORT_FORMAT = 1


class ExportError(ValueError):
    """The checkpoint cannot be exported (one line naming why and the fix)."""


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


def export_open_clip(checkpoint_path, out_path, pretrained=None, overwrite=False):
    """Write ``out_path`` (an open_clip state dict) and its JSON; returns the JSON's content.

    ``pretrained`` replaces the weights the run recorded (e.g. a local file of the tag it used).
    ``overwrite`` replaces files of those names that no export wrote (never an input of the export).
    """
    checkpoint_path, out_path = Path(checkpoint_path), Path(out_path)
    if out_path.suffix == EXPORT_METADATA_SUFFIX:
        raise ExportError(f"OUT {out_path} would be overwritten by its own metadata: name it e.g. model.pt")
    state, source = read_learner_state(checkpoint_path)
    _check_exportable(state, checkpoint_path)
    config = state["config"]
    pretrained = config["pretrained"] if pretrained is None else str(pretrained)
    check_writes({out_path: "OUT", export_metadata_path(out_path): "the metadata JSON of OUT"}, "clipood export",
                 "OUT", reads=(checkpoint_path, pretrained),
                 task="the export (the checkpoint or the pretrained weights)", overwrite=overwrite,
                 written_here=lambda path: exported_model_name(out_path) is not None)
    architecture = resolve_architecture(config["model_name"], pretrained)
    if architecture != config["model_name"]:
        raise ExportError(f"{checkpoint_path} was trained as {config['model_name']!r}, but its weights "
                          f"{pretrained!r} are {architecture!r}: the run predates QuickGELU for such weights and "
                          "fine-tuned another activation than they were trained with; train it again")
    try:
        clip_model, _, _, tokenizer = load_clip(architecture, pretrained,
                                                image_norm=config.get("image_norm", UNRECORDED_IMAGE_NORM))
    except (WeightsUnavailableError, FileNotFoundError) as error:
        raise ExportError(f"{error} (export needs the weights the run started from: pass them with "
                          "--pretrained FILE)") from error
    check_run_weights(PromptEncoder(clip_model, tokenizer, config["templates"]), state["class_names"],
                      state["text_features"], pretrained)
    try:
        clip_model.visual.load_state_dict(state["inference_encoder"])
    except RuntimeError as error:  # missing, foreign or reshaped weights
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise not_of_this_package(checkpoint_path, f"its image tower does not fit {architecture!r}: "
                                                    f"{first.rstrip('.')}") from None
    if config["logit_scale"] is not None:  # the scale the learner predicted with
        clip_model.logit_scale.data.fill_(math.log(config["logit_scale"]))
    weights = clip_model.state_dict()
    bad = [key for key, value in weights.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise ExportError(f"{checkpoint_path} has non-finite weights ({bad[0]}, ...): the run diverged")

    metadata = {EXPORT_FORMAT_KEY: EXPORT_FORMAT, EXPORT_MODEL_KEY: config["model_name"],
                "source_checkpoint": str(checkpoint_path.resolve()), "source_format": source,
                "pretrained": pretrained, "step": state["step"], "class_names": list(state["class_names"]),
                EXPORT_IMAGE_INPUT_KEY: ImageInput.of_model(clip_model).preprocess_cfg, "training": config}
    make_dirs(out_path.parent)
    existed = out_path.exists()
    save_tensors(weights, out_path)
    try:
        write_json(metadata, export_metadata_path(out_path))
    except DataError:  # no OUT without the JSON that marks it as an export's
        if not existed:
            out_path.unlink()
        raise
    return metadata


def main(checkpoint, out, pretrained=None, overwrite=False):
    """`clipood export`: prints the Python line that loads OUT with open_clip; 2 on bad input."""
    try:
        metadata = export_open_clip(checkpoint, out, pretrained, overwrite)
    except (ValueError, DataError, MissingPackageError, FileNotFoundError) as error:  # ExportError: a ValueError
        return fail("export", error)
    model_name = metadata[EXPORT_MODEL_KEY]
    print(f"open_clip model: {model_name}\n"
          f"load it with: {reload_line(model_name, out, ImageInput.of_cfg(metadata[EXPORT_IMAGE_INPUT_KEY]))}\n"
          f"metadata (source, training settings, class names): {export_metadata_path(out)}")
    return 0


def reload_line(model_name, weights_path, image_input):
    """Python that loads the export with plain open_clip, run as it stands, with the preprocessing of the input
    the model was trained on (a file tells open_clip nothing of it): a model open_clip does not ship
    (clipood-tiny) gets its config registered first, from the file this package ships."""
    config = shipped_model_config(model_name)
    register = f"open_clip.add_model_config({str(config)!r}); " if config is not None else ""
    return (f"import open_clip; {register}"
            f"open_clip.create_model_and_transforms({model_name!r}, pretrained={str(Path(weights_path).resolve())!r}, "
            f"image_mean={image_input.mean}, image_std={image_input.std}, "
            f"image_interpolation={image_input.interpolation!r}, image_resize_mode={image_input.resize_mode!r})")

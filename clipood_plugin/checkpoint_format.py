"""The checkpoint formats: what a CLIPoodLearner state holds (format 2), the settings a checkpoint must share
with the learner that loads it, its validation, and its reader from any file a front end saved it in; and the
run checkpoint of `clipood train` (format 1) that wraps a learner state.

Where a front end keeps the learner state inside its own checkpoint, the front end says: `clipood train`'s two
are listed here, and each adapter registers its own under the ``clipood.learner_states`` entry points (setup.py),
so that the core names no adapter. Files are read as data (torch.load(weights_only=True))."""
import torch

from .backbone import export_metadata_path
from .files import load_checkpoint
from .registry import registered
from .settings import (BUILD, HPARAM, SETTINGS, TRAJECTORY, ChangedSettingsError, DataError, as_recorded,
                       changed_settings, compared_when_recorded, resume_keys)

CHECKPOINT_FORMAT = 2
# settings a checkpoint must share with the learner that loads it (what the saved state is shaped by, and the
# input its weights take); model_name is the resolved open_clip architecture (e.g. "ViT-B-16-quickgelu" for
# OpenAI's weights), image_norm the resolved input (ImageInput.norm)
BUILD_KEYS = resume_keys(BUILD)
# the image_norm of checkpoints saved before it was recorded: every such run trained on OpenAI's input
UNRECORDED_IMAGE_NORM = SETTINGS["image_norm"].unrecorded
# settings a checkpoint with training state must share unless load_state_dict(allow_hparam_change=True)
TRAINING_HPARAMS = resume_keys(HPARAM)
# the other settings that shape a run's trajectory: a checkpoint with training state must share them to resume
# (an inference-only one is a predictor: its text features are recomputed with set_class_names when needed)
TRAJECTORY_KEYS = resume_keys(TRAJECTORY)
# trajectory keys that checkpoints saved before they were recorded lack (they then had the only behaviour there was)
LATER_TRAJECTORY_KEYS = compared_when_recorded()
# what state_dict(include_training_state=False) holds: the predictor
INFERENCE_KEYS = ("format", "config", "class_names", "text_features", "step", "inference_encoder")

LEARNER_STATE_ENTRY_POINTS = "clipood.learner_states"
# where `clipood train` keeps the learner state: (what the file is, the keys that lead to the state in it)
TRAIN_LEARNER_STATES = (("clipood train model.pt", ()), ("clipood train checkpoint.pt", ("learner",)))
# what read_learner_state reads of a learner state, and the type each must have
STATE_FIELDS = {"config": dict, "class_names": (list, tuple), "text_features": torch.Tensor, "step": int}
CONFIG_FIELDS = {"model_name": str, "zero_shot": bool, "templates": (list, tuple)}


def inference_state(state):
    """The predictor part of a checkpoint (what an inference-only state_dict holds)."""
    return {key: state[key] for key in INFERENCE_KEYS if key in state}


def changed_build_settings(saved_config, now_config):
    """[(build key, the checkpoint's value, the value now)] where a checkpoint's config differs from a learner's
    on what shapes the saved state (a checkpoint saved before image_norm was recorded trained on OpenAI's input)."""
    return changed_settings(as_recorded(saved_config), now_config, BUILD_KEYS)


# ----------------------------------------------------------------------------- validation against a learner
def check_loadable(learner, state, allow_hparam_change):
    """Raise ValueError unless ``learner.load_state_dict`` can load all of ``state``; returns the
    TRAINING_HPARAMS on which a checkpoint with training state differs from the learner (allowed ones only)."""
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"not a CLIPoodLearner checkpoint of format {CHECKPOINT_FORMAT} (found {found!r})")
    _require_keys(state, ("config", "class_names", "text_features", "step", "inference_encoder"))
    mine, theirs = learner.config, state["config"]
    if not isinstance(theirs, dict):
        raise ValueError("the checkpoint's config is not a dict of settings")
    changed_build = changed_build_settings(theirs, mine)
    if changed_build:
        raise ChangedSettingsError(changed_build, "rebuild the learner with the checkpoint's config")
    names, features = state["class_names"], state["text_features"]
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise ValueError("the checkpoint's class_names is not a non-empty list of strings")
    if not isinstance(features, torch.Tensor) or features.shape != (len(names), learner.text_features.shape[1]):
        raise ValueError(f"the checkpoint's text_features are not [{len(names)} classes, "
                         f"{learner.text_features.shape[1]}] as this model's text tower makes them")
    if not torch.isfinite(features).all():
        raise ValueError("the checkpoint's text_features are not all finite: it is damaged or from a diverged "
                         "run, not a predictor")
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= (mine["total_steps"] or 0):
        raise ValueError(f"the checkpoint's step {step!r} is not in [0, total_steps={mine['total_steps']}]")
    check_tensors("inference_encoder", state["inference_encoder"], learner.inference_encoder.state_dict(),
                  finite=True)
    if "image_encoder" not in state:
        return []
    if len(names) != learner.num_classes:
        raise ValueError(f"the checkpoint was trained on {len(names)} classes and this learner on "
                         f"{learner.num_classes}; build it with the checkpoint's class names to resume")
    theirs = as_recorded(theirs)
    trajectory = [key for key in TRAJECTORY_KEYS if key in theirs or key not in LATER_TRAJECTORY_KEYS]
    fixed = changed_settings(theirs, mine, trajectory) + changed_settings(
        {"class_names": names}, {"class_names": learner.class_names}, ["class_names"])
    hparams = changed_settings(theirs, mine, TRAINING_HPARAMS)
    refused = fixed + ([] if allow_hparam_change else hparams)
    if refused:
        raise ChangedSettingsError(refused, "build the learner with the checkpoint's settings to resume its run"
                                   + ("" if fixed else ", or pass allow_hparam_change=True to go on with this "
                                                       "learner's"))
    changed = [name for name, _, _ in hparams]
    _require_keys(state, ("training_step", "scheduler") + (("averager",) if learner.averager is not None else ()))
    check_tensors("image_encoder", state["image_encoder"], learner.model.state_dict(), same_dtype=True, finite=True)
    learner.training_step.check_state(state["training_step"])
    scheduler = state["scheduler"]
    if not isinstance(scheduler, dict) or (scheduler.get("T_max"), scheduler.get("last_epoch")) != \
            (mine["total_steps"], step):
        raise ValueError(f"the checkpoint's learning-rate schedule is not a cosine over {mine['total_steps']} "
                         f"steps at step {step}")
    if learner.averager is not None and (not isinstance(state["averager"], dict)
                                         or state["averager"].get("step") != step):
        raise ValueError(f"the checkpoint's averager state is not that of step {step}")
    return changed


def _require_keys(state, keys):
    missing = [key for key in keys if key not in state]
    if missing:
        raise ValueError(f"the checkpoint lacks {', '.join(missing)}")


def describe(value):
    """A value as a message shows it: a tensor's dtype and shape, else its type."""
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} {list(value.shape)}"
    return type(value).__name__


def check_tensors(name, theirs, mine, same_dtype=False, finite=False):
    """Raise ValueError unless ``theirs`` has the keys of the state dict ``mine`` and tensors of its shapes
    (and dtypes: the precision the weights are stored in; and, with ``finite``, finite floating-point values)."""
    if not isinstance(theirs, dict) or set(theirs) != set(mine):
        keys = set(theirs) if isinstance(theirs, dict) else set()
        missing, unexpected = sorted(set(mine) - keys)[:3], sorted(keys - set(mine))[:3]
        raise ValueError(f"the checkpoint's {name} is not this model's: missing {missing}, unexpected {unexpected}; "
                         "was it saved from another model_name?")
    for key, value in mine.items():
        other = theirs[key]
        if not isinstance(other, torch.Tensor) or other.shape != value.shape or (same_dtype and other.dtype != value.dtype):
            raise ValueError(f"the checkpoint's {name}[{key!r}] is {describe(other)} where this learner's is "
                             f"{describe(value)}" + ("; build it with the precision the checkpoint was trained with "
                                                     "(authors-fp16 stores fp16 weights)"
                                                     if other.shape == value.shape else ""))
        if finite and other.is_floating_point() and not torch.isfinite(other).all():
            raise ValueError(f"the checkpoint's {name}[{key!r}] holds non-finite values: it is damaged or from a "
                             "diverged run")


# ----------------------------------------------------------------------------- reading it from any front end's file
def learner_state_locations():
    """((what the file is, the keys that lead to the learner state in it), ...): `clipood train`'s, then those the
    adapters register (entry points ``clipood.learner_states``: a (name, keys) pair each)."""
    points = registered(LEARNER_STATE_ENTRY_POINTS)
    return TRAIN_LEARNER_STATES + tuple(points[name].load() for name in sorted(points))


def read_learner_state(checkpoint_path):
    """(learner state, name of the format) from any file a front end saved a learner in, read as data and checked
    to hold every field a reader of it needs; DataError naming what the file is not, else."""
    locations = learner_state_locations()
    readable = "give a " + ", a ".join(name for name, _ in locations)
    checkpoint = load_checkpoint(checkpoint_path, numpy_scalars=True,  # DomainBed's random hparams: numpy floats
                                 fix=readable)
    for source, keys in locations:
        state = checkpoint
        for key in keys:
            state = state.get(key) if isinstance(state, dict) else None
        if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT and "config" in state:
            _check_learner_state(state, checkpoint_path)
            return state, source
    if _is_open_clip_state_dict(checkpoint):
        raise DataError(f"{checkpoint_path} holds open_clip weights but no CLIPood learner: a `clipood export` file "
                        f"is read with the JSON written beside it, and {export_metadata_path(checkpoint_path)} is "
                        "missing; put it back beside the file")
    raise DataError(f"{checkpoint_path} holds no CLIPood learner: {readable}")


def _is_open_clip_state_dict(checkpoint):
    return isinstance(checkpoint, dict) and "logit_scale" in checkpoint and any(
        isinstance(key, str) and key.startswith("visual.") for key in checkpoint)


def not_of_this_package(checkpoint_path, what):
    """The DataError for a file that holds a learner state this package did not write as it stands."""
    return DataError(f"{checkpoint_path} is not a checkpoint of this package ({what})")


def _of_kind(value, kind):
    """isinstance, where a bool is not taken for an int (True is no step count)."""
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _check_learner_state(state, checkpoint_path):
    """A learner state as this package writes it: every field its readers use, of its type."""
    for fields, holder, prefix in ((STATE_FIELDS, state, ""), (CONFIG_FIELDS, state.get("config"), "config.")):
        for field, kind in fields.items():
            if not isinstance(holder, dict) or field not in holder:
                raise not_of_this_package(checkpoint_path, f"it has no {prefix}{field}")
            if not _of_kind(holder[field], kind):
                raise not_of_this_package(checkpoint_path, f"its {prefix}{field} is a {type(holder[field]).__name__}")
    for field in ("pretrained", "logit_scale"):
        if field not in state["config"]:
            raise not_of_this_package(checkpoint_path, f"it has no config.{field}")
    # a zero-shot learner (DomainBed's CLIPZeroShot) saves no encoder: it is the pretrained one
    if not state["config"]["zero_shot"] and not isinstance(state.get("inference_encoder"), dict):
        raise not_of_this_package(checkpoint_path, "it has no inference_encoder")
    if state["text_features"].ndim != 2 or len(state["text_features"]) != len(state["class_names"]):
        raise not_of_this_package(checkpoint_path, f"text_features of shape {tuple(state['text_features'].shape)} "
                                                    f"for {len(state['class_names'])} class names")


# ----------------------------------------------------------------------------- the run checkpoint of `clipood train`
RUN_CHECKPOINT_FORMAT = 1  # layout of OUTPUT_DIR/checkpoint.pt: config, learner, state, data


def run_checkpoint(config, learner, state, data):
    """What OUTPUT_DIR/checkpoint.pt holds: ``config`` (TrainConfig as a dict), ``learner`` (its state dict),
    ``state`` (the run state as a plain dict) and ``data`` (the file-list digest of the dataset)."""
    return {"format": RUN_CHECKPOINT_FORMAT, "config": config, "learner": learner, "state": state, "data": data}


def read_run_checkpoint(path):
    """The run checkpoint in ``path``, checked to be of this format (DataError naming the fix otherwise)."""
    checkpoint = load_checkpoint(path)
    if not (isinstance(checkpoint, dict) and checkpoint.get("format") == RUN_CHECKPOINT_FORMAT
            and {"config", "learner", "state", "data"} <= set(checkpoint)):
        raise DataError(f"{path} is not a checkpoint of this version of clipood train; start over "
                        "with --overwrite, or choose another --output-dir")
    return checkpoint

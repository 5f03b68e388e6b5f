"""Checkpoint formats: what each file holds, and the checked readers."""
from .files import load_checkpoint
from .settings import DataError


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

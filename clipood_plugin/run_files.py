"""The files of one `clipood train` run in OUTPUT_DIR, and the run state its checkpoint carries."""
import dataclasses
import math
import shutil
from pathlib import Path
from typing import Optional

from .files import save_tensors
from .settings import ChangedSettingsError, DataError, changed_settings
from .train_config import TrainConfig, flag
from .write_guard import RUN_FILES, check_run_outputs


@dataclasses.dataclass
class RunState:
    """What a run's checkpoint carries beside the learner: the evaluations so far (``history``: {"step", "final",
    "bma"}, each an accuracy (%) per split), the averaging weight (a_0 first) and the loss of each step, the
    unreadable images found ({path: reason}) and the zero-shot accuracy (None until evaluated). The checkpoint
    holds it as a plain dict, ``as_dict()``."""
    history: list = dataclasses.field(default_factory=list)
    bma_weights: list = dataclasses.field(default_factory=list)
    losses: list = dataclasses.field(default_factory=list)
    skipped_images: dict = dataclasses.field(default_factory=dict)
    zero_shot: Optional[dict] = None

    @classmethod
    def from_dict(cls, state):
        return cls(**state)

    def as_dict(self):
        """The checkpoint's "state": these keys in this order, "zero_shot" once evaluated (as runs have always
        saved it: a checkpoint's bytes depend on both)."""
        state = {"history": self.history, "bma_weights": self.bma_weights, "losses": self.losses,
                 "skipped_images": self.skipped_images}
        if self.zero_shot is not None:
            state["zero_shot"] = self.zero_shot
        return state

    def record_zero_shot(self, accuracy, averaging_weight):
        """The evaluation of step 0, and a_0, the averaging weight of the pretrained model."""
        self.zero_shot = accuracy
        self.bma_weights.append(averaging_weight)
        self.history.append({"step": 0, "final": accuracy, "bma": accuracy})

    def record_step(self, stats):
        """What CLIPoodLearner.update returned for a step."""
        self.bma_weights.append(stats["bma_weight"])
        self.losses.append(stats["loss"])

    def record_skipped(self, found):
        """Lists the (path, reason) of ``found`` not listed yet; returns those."""
        new = []
        for path, reason in found:
            if path not in self.skipped_images:
                self.skipped_images[path] = reason
                new.append((path, reason))
        return new

    def first_nonfinite_loss_step(self):
        """The first step whose loss was not finite, None if none."""
        return next((step for step, loss in enumerate(self.losses, 1) if not math.isfinite(loss)), None)


class RunFiles:
    """Files of one run in OUTPUT_DIR."""

    def __init__(self, output_dir):
        self.dir = Path(output_dir)
        self.results, self.model, self.checkpoint, self.plot = (self.dir / name for name in RUN_FILES)
        self.tensorboard = self.dir / "tensorboard"  # scalars, when tensorboard is installed

    def check_start(self, config):
        """Refuse to start where the run would overwrite work, or resume what is not there."""
        check_run_outputs(self.dir, config.pretrained)
        finished = [path.name for path in (self.results, self.model) if path.exists()]
        if config.resume and not self.checkpoint.exists():
            raise DataError(f"--resume: no checkpoint at {self.checkpoint}"
                            + (f" (the run there finished: {', '.join(finished)})" if finished else ""))
        if config.resume or config.overwrite:
            return
        if self.checkpoint.exists():
            raise DataError(f"{self.checkpoint} holds an unfinished run; pass --resume to continue it, --overwrite "
                            "to start over, or choose another --output-dir")
        if finished:
            raise DataError(f"{self.dir} holds a finished run ({', '.join(finished)}); pass --overwrite to replace "
                            "it, or choose another --output-dir")

    def clear(self):
        for name in RUN_FILES:
            (self.dir / name).unlink(missing_ok=True)
        shutil.rmtree(self.tensorboard, ignore_errors=True)

    def save_checkpoint(self, config, learner, state, dataset):
        """The run checkpoint of ``learner`` and ``state`` (a RunState) at its current step."""
        from .checkpoint_format import run_checkpoint  # with torch: the checks before a run begins need neither

        save_tensors(run_checkpoint(dataclasses.asdict(config), learner.state_dict(), state.as_dict(),
                                    dataset.file_list_digest()), self.checkpoint)

    def load_checkpoint(self, config, dataset):
        """(the learner's state dict, the RunState) of the run checkpoint, checked against this command's settings
        and dataset."""
        from .checkpoint_format import read_run_checkpoint  # with torch: the checks before a run begins need neither

        checkpoint = read_run_checkpoint(self.checkpoint)
        now = dataclasses.asdict(config)
        changes = changed_settings(checkpoint["config"], now,
                                   [key for key in now if key not in TrainConfig.RESUMABLE_CHANGES])
        if changes:
            raise ChangedSettingsError(changes, "resume with the checkpoint's settings, or start a new run in "
                                       "another --output-dir", spelled=flag)
        saved, now = checkpoint["data"], dataset.file_list_digest()
        changed = sorted(d for d in set(saved) | set(now) if saved.get(d) != now.get(d))
        if changed:
            counts = "; ".join(f"{d}: {saved.get(d, [0])[0]} image files then, {now.get(d, [0])[0]} now"
                               for d in changed)
            raise DataError(f"--resume: the image files of {config.data_dir} changed since the checkpoint ({counts}); "
                            "the holdout split and the data order are drawn from them: restore them, or start over "
                            "with --overwrite")
        return checkpoint["learner"], RunState.from_dict(checkpoint["state"])

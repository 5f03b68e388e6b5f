"""Curves to watch during a run: TensorBoard scalars, when the ``tensorboard`` package is installed
(``pip install ".[tensorboard]"``); without it, nothing is written. One writer for `clipood train` and the
DomainBed algorithm, so that both name their curves alike."""
import math
import os
import re

from .settings import DataError

FLUSH_SECONDS = 10  # how soon a curve shows what the run did


class ScalarLog:
    """Scalars of a run in ``directory`` (TensorBoard event files), by step.

    ``resumed_at``: the step a resumed run goes on from; what an earlier writer logged past it (steps the
    interrupted run made after its checkpoint, which the resumed run makes again) is dropped from view.
    No ``directory``, or no tensorboard: nothing is written (``available`` is False)."""

    def __init__(self, directory=None, resumed_at=None):
        self._writer = None
        if directory is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an extra
            return
        try:
            self._writer = SummaryWriter(str(directory), flush_secs=FLUSH_SECONDS,
                                         purge_step=resumed_at + 1 if resumed_at else None)
        except OSError as error:  # the folder cannot be made: a file of its name, a read-only output folder
            fix = ("it is a file: move or remove it" if os.path.isfile(directory)
                   else f"make {os.path.dirname(os.path.abspath(directory))} a writable folder")
            raise DataError(f"cannot write TensorBoard scalars to the folder {directory} ({error.strerror}): "
                            f"{fix}") from None

    @property
    def available(self):
        return self._writer is not None

    def add(self, values, step):
        """``values``: {tag: number}; non-finite numbers (a skipped step's loss) are left out."""
        if self._writer is None:
            return
        for tag, value in values.items():
            if value is not None and math.isfinite(value):
                self._writer.add_scalar(tag, value, step)

    def add_step(self, stats, step):
        """What CLIPoodLearner.update returned for ``step``."""
        self.add({"train/loss": stats["loss"], "train/batch_accuracy": stats["acc"], "train/lr": stats["lr"],
                  "train/bma_weight": stats["bma_weight"], "train/skipped_steps": stats["skipped"]}, step)

    def add_accuracy(self, accuracy, step, prefix="accuracy"):
        """{split: accuracy (%)} of an evaluation of the model ``prefix`` names; a split's name may hold any
        characters ("painting (holdout)" is tagged painting_holdout)."""
        self.add({f"{prefix}/{_tag(split)}": value for split, value in accuracy.items()}, step)

    def close(self):
        if self._writer is not None:
            self._writer.close()


def _tag(name):
    return re.sub(r"[^-\w.]+", "_", name).strip("_")

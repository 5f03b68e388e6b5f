"""The learner as one model registered with Dassl, so that Dassl's save_model / --resume carry it."""
import random

import numpy as np
import torch
from torch import nn

from .distributed import decorrelate_rng

# where a Dassl checkpoint keeps the learner state, ResumableLearner's "learner" inside Dassl's "state_dict"
# (entry point clipood.learner_states: the core reads it so)
LEARNER_STATE = ("Dassl checkpoint", ("state_dict", "learner"))


def capture_rng_state():
    """The random streams that drive data order and augmentation, in types torch.load(weights_only=True) accepts."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {"python": random.getstate(), "numpy": (kind, keys.tolist(), position, has_gauss, cached_gaussian),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng_state(state):
    random.setstate(state["python"])
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumableLearner(nn.Module):
    """What Dassl's checkpoint code sees as the registered model (with optim and sched None, since the
    learner steps its own AdamW and cosine schedule).

    ``state_dict()`` is the learner's state (BMA average and step included) plus the RNG state at the
    end of the epoch; ``load_state_dict()`` restores both, which is what ``resume_from_checkpoint``
    calls. A finished run saves the inference state only (no optimizer, no live weights).
    """

    def __init__(self, learner):
        super().__init__()
        self.learner = learner  # not an nn.Module: holds no parameters of this module

    def state_dict(self, *args, **kwargs):
        learner = self.learner
        finished = learner.step >= learner.config["total_steps"]
        return {"learner": learner.state_dict(include_training_state=not finished), "rng": capture_rng_state()}

    def load_state_dict(self, state_dict, strict=True, assign=False):
        self.learner.load_state_dict(state_dict["learner"])
        restore_rng_state(state_dict["rng"])
        decorrelate_rng()  # the saved state is rank 0's

"""Dassl's side of data-parallel training (torchrun): Dassl has no notion of ranks, so the trainer splits
every training batch over them, keeps ranks > 0 silent, and gives them their own augmentation randomness.
The process group, DDP and the synchronized step are the learner's (clipood_plugin.distributed).
"""
import os
import random
import sys

import numpy as np
import torch
from torch.utils.data import Sampler

from clipood_plugin import distributed

from .loaders import loader_like


def quiet_unless_main():
    """Ranks > 0 print nothing, into the console or into the log file that Dassl's ``setup_logger`` may
    already have opened on every rank (CoOp's and Dassl's train.py call it before the trainer exists)."""
    if distributed.is_main():
        return
    devnull = open(os.devnull, "w")
    if getattr(sys.stdout, "file", None) is not None:  # dassl.utils.logger.Logger: console + file
        sys.stdout.file.close()
        sys.stdout.file = None
        sys.stdout.console = devnull
    else:
        sys.stdout = devnull


def decorrelate_rng():
    """Ranks > 0 draw their own augmentations (and loader worker seeds): reseed them from the current
    state and the rank. Rank 0 keeps the random streams of a single-process run."""
    rank = distributed.rank()
    if rank:
        seed = (int(torch.randint(2 ** 31, ())) + rank) % 2 ** 32
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


class RankSlices(Sampler):
    """This rank's items r, r + W, ... of every batch of ``batch_sampler``. The batches are rank 0's, sent
    to the others at the start of each pass: the ranks split the same global batches whatever the state
    of their own random generators (Dassl's samplers draw from the global ones)."""

    def __init__(self, batch_sampler, rank, world_size):
        self.batch_sampler, self.rank, self.world_size = batch_sampler, rank, world_size

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        batches = [list(batch) for batch in self.batch_sampler] if self.rank == 0 else None
        for batch in distributed.broadcast_object(batches):
            yield batch[self.rank::self.world_size]


def split_over_ranks(loader):
    """A loader like ``loader`` (Dassl's train_loader_x) whose batches are this rank's share of its batches."""
    rank, world_size = distributed.rank(), distributed.world_size()
    if loader.batch_size < world_size:
        raise ValueError(f"DATALOADER.TRAIN_X.BATCH_SIZE {loader.batch_size} is smaller than the {world_size} "
                         "processes that split each batch; raise it or start fewer processes")
    return loader_like(loader, batch_sampler=RankSlices(loader.batch_sampler, rank, world_size))

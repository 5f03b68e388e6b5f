"""Fixed-length epochs: the reference runs 500 optimizer steps per "epoch" whatever the dataset size."""
from torch.utils.data import Sampler

from .loaders import loader_like


class ConsecutivePasses(Sampler):
    """``count`` indices taken from consecutive passes of ``sampler`` (each pass reshuffled by it)."""

    def __init__(self, sampler, count):
        if len(sampler) == 0:
            raise ValueError("the training sampler is empty; check the dataset and DATALOADER.TRAIN_X settings")
        self.sampler = sampler
        self.count = count

    def __len__(self):
        return self.count

    def __iter__(self):
        produced = 0
        while True:
            for index in self.sampler:
                if produced == self.count:
                    return
                yield index
                produced += 1


def fixed_length_epoch(loader, iterations):
    """A loader like Dassl's ``train_loader_x`` whose every pass is ``iterations`` batches, drawn from
    consecutive passes of its sampler. One loader iterator per epoch: its workers start once per epoch,
    not once per pass over a few-shot set, and an epoch depends only on the RNG state at its start,
    which is what lets a run resumed from an epoch checkpoint repeat the uninterrupted run exactly.
    """
    return loader_like(loader, batch_size=loader.batch_size, drop_last=False,
                       sampler=ConsecutivePasses(loader.sampler, iterations * loader.batch_size))

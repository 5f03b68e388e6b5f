"""Accuracy over evaluation loaders: of a training run (training_run.py), of WiSE-FT's interpolations
(wise_ft.py) and of a saved model (`clipood evaluate`)."""
import math

import torch

from . import distributed
from .data import ImageList, ignore_stop_signals


def evaluation_loader(items, transform, workers, **kwargs):
    """Evaluation batches (images, labels, skipped): an image that cannot be read is left out and reported."""
    return torch.utils.data.DataLoader(ImageList(items, transform, unreadable="drop"), num_workers=workers,
                                       collate_fn=ImageList.collate, worker_init_fn=ignore_stop_signals, **kwargs)


def evaluate(learner, eval_loaders, averaged, skipped, batches_of=iter):
    """Accuracy (%) per evaluation split, over the images that can be read; the others' (path, reason) is
    appended to ``skipped``. ``batches_of(loader)`` iterates a loader. Distributed, each rank's loaders
    hold its share of the split and the counts are summed over ranks (the weights, and so the
    predictions, are the same on every rank)."""
    counts = torch.zeros(len(eval_loaders), 2, dtype=torch.float64)
    for i, loader in enumerate(eval_loaders.values()):
        for images, labels, unreadable in batches_of(loader):
            skipped.extend(unreadable)
            if images is not None:
                counts[i, 0] += (learner.predict(images, averaged=averaged).argmax(1).cpu() == labels).sum().item()
                counts[i, 1] += len(labels)
    counts = distributed.all_reduce_sum(counts.to(learner.device)).cpu()
    return {name: 100.0 * correct / total if total else math.nan
            for name, (correct, total) in zip(eval_loaders, counts.tolist())}

"""The training batches of `clipood train`: per step one batch of each training domain, concatenated, drawn
from (seed, step) alone so that a resumed run sees the batches an uninterrupted one would."""
import collections

import torch

from .data import ImageList, StepBatchSampler, ignore_stop_signals
from .device_decoding import EncodedBatch, EncodedImageList, decoded_ahead, device_augmentation
from .image_files import image_list
from .settings import DECODE_CHOICES, DataError


def training_batches(items_per_domain, transform, batch_size, seed, workers, start_step=0, rank=0, world_size=1,
                     decode="auto", device="cpu", skipped=None, domains=None):
    """(images, labels) of each step from ``start_step`` on: one batch of ``batch_size`` per training domain
    (this rank's share of it), concatenated. Each domain has its own loader processes and data order.

    ``decode="device"`` decodes and augments the JPEGs on ``device`` in one batch per step
    (clipood_plugin.device_decoding; the loader processes only read files and draw the crops), and the
    images come back on ``device``; with "cpu" the loader processes do it all (a transform that takes uint8
    pixels, as ``preprocess_train``, gets them from image_files.read_pixels, others get PIL images); "auto" is
    "device" on CUDA where the transform allows, else "cpu".

    With a list ``skipped``, an image that cannot be read is replaced by the next readable one of its
    domain (ImageList "replace": the batches stay a function of the seed and the step) and its
    (path, reason) is appended to the list when its batch is yielded; without, it raises UnreadableImage.
    """
    if decode not in DECODE_CHOICES:
        raise DataError(f"unknown decode {decode!r}; choose one of {DECODE_CHOICES}")
    device = torch.device(device)
    on_device = device_augmentation(decode, transform, device)
    unreadable = "raise" if skipped is None else "replace"
    streams = []
    for i, items in enumerate(items_per_domain):
        sampler = StepBatchSampler(len(items), batch_size, seed * 1000 + i, start_step, rank, world_size,
                                   domain=domains and domains[i])  # ``domains``: their names, for messages
        if on_device is None:
            dataset, collate = image_list(items, transform, unreadable), ImageList.collate
        else:
            dataset, collate = EncodedImageList(items, on_device, unreadable), EncodedBatch.collate
        streams.append(iter(torch.utils.data.DataLoader(
            # unpinned: decoded images are pinned once concatenated, and nvJPEG does not read pinned JPEG bytes
            dataset, batch_sampler=sampler, num_workers=workers, pin_memory=False,
            collate_fn=collate, worker_init_fn=ignore_stop_signals)))
    skipped = [] if skipped is None else skipped
    if on_device is None:
        for parts in _together(streams):
            skipped.extend(entry for *_, found in parts for entry in found)
            yield (_concatenated([images for images, *_ in parts], pinned=device.type == "cuda"),
                   torch.cat([labels for _, labels, _ in parts]))
    else:
        pending = collections.deque()  # what each batch skipped, until it comes back decoded (in order)

        def encoded():
            for batch in map(EncodedBatch.cat, _together(streams)):
                pending.append(batch.skipped)
                yield batch

        for images, labels in decoded_ahead(encoded(), on_device, device):
            skipped.extend(pending.popleft())
            yield images, labels


def _concatenated(tensors, pinned):
    """torch.cat, into page-locked memory when ``pinned`` so that the copy to the GPU can be asynchronous
    (a cat of pinned tensors is not pinned itself, so the loaders do not pin their parts)."""
    if not pinned:
        return torch.cat(tensors)
    out = torch.empty((sum(len(t) for t in tensors), *tensors[0].shape[1:]), dtype=tensors[0].dtype, pin_memory=True)
    return torch.cat(tensors, out=out)


def _together(streams):
    while True:
        yield [next(stream) for stream in streams]

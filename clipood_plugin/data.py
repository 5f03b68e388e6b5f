"""Folder datasets laid out ROOT/<domain>/<class>/<image> (the PACS and OfficeHome layout), with
batches that depend only on (seed, step), so an interrupted run resumes exactly."""
import contextlib
import io
import signal

import numpy as np
import torch
from PIL import Image

from .folders import (IMAGE_EXTENSIONS, FolderDataset, check_pixel_mode, describe_error,  # noqa: F401 (re-exported)
                      is_16_bit_gray, scan_domain_folders)
from .settings import DataError

UNREADABLE_CHOICES = ("raise", "replace", "drop")  # what an ImageList does with an image it cannot read


class UnreadableImage(DataError):
    """An image file that cannot be decoded; ``reason`` says why."""

    def __init__(self, path, reason=None):
        super().__init__(path if reason is None else f"cannot read image {path} ({reason}); remove or replace it")
        self.reason = reason


def split_holdout(items, fraction, seed):
    """(train, holdout) with a seeded shuffle; holdout gets round(fraction * n) items."""
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    n_holdout = int(round(fraction * len(items)))
    return [items[i] for i in order[n_holdout:]], [items[i] for i in order[:n_holdout]]


@contextlib.contextmanager
def open_image(path, data=None):
    """The PIL image of ``path`` (lazily opened), or of its bytes ``data`` when given; a file PIL cannot
    read (here or while the block decodes it) becomes an UnreadableImage naming it."""
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as image:
            yield image
    except Exception as error:  # PIL raises many types for broken files
        raise UnreadableImage(path, describe_error(error)) from None


def rgb_image(image):
    """``image`` decoded as 8-bit RGB. 16-bit grayscale is scaled to 8 bits (PIL's own convert clips it,
    which turns almost every pixel white); 32-bit integer and float pixels are refused."""
    check_pixel_mode(image)
    if is_16_bit_gray(image):
        levels = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        image = Image.fromarray(((levels * 255 + 32767) // 65535).astype(np.uint8))
    return image.convert("RGB")


def ignore_stop_signals(worker_id=None):
    """DataLoader ``worker_init_fn``: Ctrl-C and SIGTERM reach every process of a terminal's or a Slurm job's
    process group; they are the training process's to handle (a worker ends when that process ends)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class ImageList(torch.utils.data.Dataset):
    """(path, label) pairs; an index may come with a seed that fixes the random augmentation.

    An item is (image, label, skipped). An image that cannot be read raises UnreadableImage with
    ``unreadable="raise"``; with "replace" the next readable item of the list is loaded in its place (with
    the same augmentation seed, so batches keep their size and still depend only on the seed and the
    step); with "drop" the image is None. ``skipped`` holds the (path, reason) of each file passed over.
    Batch items with ``collate``.
    """

    def __init__(self, items, transform, unreadable="raise"):
        if unreadable not in UNREADABLE_CHOICES:
            raise ValueError(f"unreadable must be one of {UNREADABLE_CHOICES}, got {unreadable!r}")
        self.items = items
        self.transform = transform
        self.unreadable = unreadable

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        index, seed = index if isinstance(index, tuple) else (index, None)
        skipped = []
        for offset in range(len(self.items)):
            path, label = self.items[(index + offset) % len(self.items)]
            try:
                return self._load_seeded(path, seed), label, tuple(skipped)
            except UnreadableImage as error:
                if self.unreadable == "raise":
                    raise
                skipped.append((path, error.reason))
                if self.unreadable == "drop":
                    return None, label, tuple(skipped)
        raise DataError(f"none of the {len(self.items)} images of a list can be read; the first: "
                        f"{skipped[0][0]} ({skipped[0][1]})")

    def _load_seeded(self, path, seed):
        if seed is None:
            return self.load(path)
        with torch.random.fork_rng(devices=[]):
            # the CPU generator alone, which the transforms draw from: torch.manual_seed also queues the seed of
            # every device kind with a stack trace each, a third of an image's loading time
            torch.default_generator.manual_seed(seed)
            return self.load(path)

    def load(self, path):
        with open_image(path) as image:
            image = rgb_image(image)
        return self.transform(image)

    @staticmethod
    def collate(samples):
        """(images, labels, skipped) of a batch of items; images left out where None ("drop"), and None
        when none is left."""
        kept = [(image, label) for image, label, _ in samples if image is not None]
        images = torch.stack([image for image, _ in kept]) if kept else None
        labels = torch.tensor([label for _, label in kept], dtype=torch.int64)
        return images, labels, [entry for *_, skipped in samples for entry in skipped]


class StepBatchSampler(torch.utils.data.Sampler):
    """Infinite batches of (index, augmentation seed), fully determined by (seed, step).

    Epoch e is a permutation drawn from seed e; step k reads batch k mod (n // batch_size) of epoch
    k // (n // batch_size) (incomplete batches are dropped). Starting at ``start_step`` reproduces
    exactly what an uninterrupted run would have read from that step on.

    With ``world_size`` > 1 each batch is split over the ranks: rank r reads its items r, r + world_size,
    ... (with their augmentation seeds), so together the ranks read exactly the single-process batch.
    """

    def __init__(self, num_items, batch_size, seed, start_step=0, rank=0, world_size=1, domain=None):
        if num_items < batch_size:
            where = "a training domain" if domain is None else f"training domain {domain!r}"
            raise DataError(f"{where} has {num_items} training image(s), fewer than the batch size {batch_size}, "
                            "which is per training domain: lower --batch-size to at most "
                            f"{num_items}, or add images to that domain")
        if batch_size < world_size:
            raise DataError(f"--batch-size {batch_size} (per domain) is smaller than the {world_size} processes "
                            "that split it; raise it or start fewer processes")
        self.num_items, self.batch_size, self.seed, self.start_step = num_items, batch_size, seed, start_step
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = num_items // batch_size

    def _epoch(self, epoch):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.num_items, generator=generator)
        seeds = torch.randint(0, 2 ** 62, (self.num_items,), generator=generator)
        return order.tolist(), seeds.tolist()

    def __iter__(self):
        epoch, position = divmod(self.start_step, self.batches_per_epoch)
        while True:
            order, seeds = self._epoch(epoch)
            for b in range(position, self.batches_per_epoch):
                chunk = range(b * self.batch_size + self.rank, (b + 1) * self.batch_size, self.world_size)
                yield [(order[i], seeds[i]) for i in chunk]
            epoch, position = epoch + 1, 0

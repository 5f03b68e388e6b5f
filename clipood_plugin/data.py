"""Folder datasets laid out ROOT/<domain>/<class>/<image> (the PACS and OfficeHome layout), with
batches that depend only on (seed, step), so an interrupted run resumes exactly."""
import contextlib
import hashlib
import io
import signal
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .settings import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
UNREADABLE_CHOICES = ("raise", "replace", "drop")  # what an ImageList does with an image it cannot read


class UnreadableImage(DataError):
    """An image file that cannot be decoded; ``reason`` says why."""

    def __init__(self, path, reason=None):
        super().__init__(path if reason is None else f"cannot read image {path} ({reason}); remove or replace it")
        self.reason = reason


@dataclass
class FolderDataset:
    root: Path
    domains: list
    class_names: list
    samples: dict  # domain -> [(path, label)] of every image file, readable or not
    skipped: list = field(default_factory=list)  # [(path, reason)] of the files found unreadable

    def file_list_digest(self):
        """{domain: [number of image files, sha256 of their paths and labels]}: what the holdout split and the
        data order are drawn from."""
        digest = {}
        for domain, items in self.samples.items():
            lines = "".join(f"{Path(path).relative_to(self.root).as_posix()}\t{label}\n" for path, label in items)
            digest[domain] = [len(items), hashlib.sha256(lines.encode()).hexdigest()]
        return digest


def _subdirs(path):
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _describe(error):
    return f"{type(error).__name__}: {error}"


def _readable(path):
    """None, or why PIL cannot read the file (a quick check: it does not decode the whole image)."""
    try:
        with Image.open(path) as image:
            _check_pixel_mode(image)
            image.verify()
        return None
    except Exception as error:  # PIL raises many types for broken files
        return _describe(error)


def _missing_classes(class_names, classes_per_domain):
    """The message for the classes some domains lack, or None."""
    missing = {d: sorted(set(class_names) - set(c)) for d, c in classes_per_domain.items()}
    missing = {d: m for d, m in missing.items() if m}
    if not missing:
        return None
    details = "; ".join(f"{d} lacks {m}" for d, m in missing.items())
    return (f"every domain must hold every class ({details}; an empty class folder or one without a readable image "
            "counts as missing); add the images, or pass --allow-missing-classes to train and evaluate with the "
            "classes each domain has")


def scan_domain_folders(root, allow_missing_classes=False) -> FolderDataset:
    """Index ROOT/<domain>/<class>/<image>. Labels follow the sorted class folder names (as
    torchvision's ImageFolder and DomainBed assign them). Every image file is indexed; those PIL cannot
    read are listed in ``skipped`` (an ImageList skips them when it meets them, as it does files that
    break later). A class folder without a readable image counts as missing."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data dir {root} does not exist; expected ROOT/<domain>/<class>/<image>")
    domains = _subdirs(root)
    if not domains:
        raise DataError(f"data dir {root} has no domain folders; expected ROOT/<domain>/<class>/<image>")
    class_folders = {d.name: [c.name for c in _subdirs(d)] for d in domains}
    class_names = sorted(set().union(*class_folders.values()))
    if not class_names:
        raise DataError(f"no class folders under the domains of {root}; expected ROOT/<domain>/<class>/<image>")
    missing = _missing_classes(class_names, class_folders)  # before reading any image
    if missing and not allow_missing_classes:
        raise DataError(missing)
    label_of = {name: i for i, name in enumerate(class_names)}
    samples, skipped, readable_classes = {}, [], {}
    for domain in domains:
        items, readable_classes[domain.name] = [], set()
        for class_dir in _subdirs(domain):
            for path in sorted(class_dir.rglob("*")):
                if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
                    continue
                items.append((str(path), label_of[class_dir.name]))
                problem = _readable(path)
                if problem:
                    skipped.append((str(path), problem))
                else:
                    readable_classes[domain.name].add(class_dir.name)
        if not readable_classes[domain.name]:
            raise DataError(f"domain {domain.name} has no readable images (extensions {IMAGE_EXTENSIONS})")
        samples[domain.name] = items
    missing = _missing_classes(class_names, readable_classes)
    if missing and not allow_missing_classes:
        raise DataError(missing)
    return FolderDataset(root, [d.name for d in domains], class_names, samples, skipped)


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
        raise UnreadableImage(path, _describe(error)) from None


def _check_pixel_mode(image):
    if image.mode in ("I", "F") and not _is_16_bit_gray(image):
        raise ValueError(f"its {image.mode} pixels (32-bit) have no fixed range; save it with 8 or 16 bits")


def _is_16_bit_gray(image):
    return image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PNG")  # older PIL: I


def rgb_image(image):
    """``image`` decoded as 8-bit RGB. 16-bit grayscale is scaled to 8 bits (PIL's own convert clips it,
    which turns almost every pixel white); 32-bit integer and float pixels are refused."""
    _check_pixel_mode(image)
    if _is_16_bit_gray(image):
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
            torch.manual_seed(seed)
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

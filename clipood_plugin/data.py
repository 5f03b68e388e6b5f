"""Folder datasets laid out ROOT/<domain>/<class>/<image> (the PACS and OfficeHome layout), with
batches that depend only on (seed, step), so an interrupted run resumes exactly."""
import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class DataError(Exception):
    """Bad input data, reported to the user as a message rather than a traceback."""


@dataclass
class FolderDataset:
    root: Path
    domains: list
    class_names: list
    samples: dict  # domain -> [(path, label)]
    skipped: list = field(default_factory=list)  # [(path, reason)] of unreadable images


def _subdirs(path):
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _readable(path):
    try:
        with Image.open(path) as image:
            image.verify()
        return None
    except Exception as error:  # PIL raises many types for broken files
        return f"{type(error).__name__}: {error}"


def scan_domain_folders(root, allow_missing_classes=False) -> FolderDataset:
    """Index ROOT/<domain>/<class>/<image>. Labels follow the sorted class folder names (as
    torchvision's ImageFolder and DomainBed assign them). Unreadable images are skipped and counted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data dir {root} does not exist; expected ROOT/<domain>/<class>/<image>")
    domains = _subdirs(root)
    if not domains:
        raise DataError(f"data dir {root} has no domain folders; expected ROOT/<domain>/<class>/<image>")
    classes_per_domain = {d.name: [c.name for c in _subdirs(d)] for d in domains}
    class_names = sorted(set().union(*classes_per_domain.values()))
    if not class_names:
        raise DataError(f"no class folders under the domains of {root}; expected ROOT/<domain>/<class>/<image>")
    missing = {d: sorted(set(class_names) - set(c)) for d, c in classes_per_domain.items()}
    missing = {d: m for d, m in missing.items() if m}
    if missing and not allow_missing_classes:
        details = "; ".join(f"{d} lacks {m}" for d, m in missing.items())
        raise DataError(f"every domain must hold every class ({details}); add the folders, or pass "
                        "--allow-missing-classes to train and evaluate with the classes each domain has")
    label_of = {name: i for i, name in enumerate(class_names)}
    samples, skipped = {}, []
    for domain in domains:
        items = []
        for class_dir in _subdirs(domain):
            for path in sorted(class_dir.rglob("*")):
                if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
                    continue
                problem = _readable(path)
                if problem:
                    skipped.append((str(path), problem))
                else:
                    items.append((str(path), label_of[class_dir.name]))
        if not items:
            raise DataError(f"domain {domain.name} has no readable images (extensions {IMAGE_EXTENSIONS})")
        samples[domain.name] = items
    return FolderDataset(root, [d.name for d in domains], class_names, samples, skipped)


def split_holdout(items, fraction, seed):
    """(train, holdout) with a seeded shuffle; holdout gets round(fraction * n) items."""
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    n_holdout = int(round(fraction * len(items)))
    return [items[i] for i in order[n_holdout:]], [items[i] for i in order[:n_holdout]]


@contextlib.contextmanager
def open_image(path, data=None):
    """The PIL image of ``path`` (lazily opened), or of its bytes ``data`` when given; a file PIL cannot
    read becomes a DataError naming it."""
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as image:
            yield image
    except Exception as error:  # PIL raises many types for broken files
        raise DataError(f"cannot read image {path} ({type(error).__name__}: {error}); remove or replace it")


class ImageList(torch.utils.data.Dataset):
    """(path, label) pairs; an index may come with a seed that fixes the random augmentation."""

    def __init__(self, items, transform):
        self.items = items
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        index, seed = index if isinstance(index, tuple) else (index, None)
        path, label = self.items[index]
        if seed is None:
            return self.load(path), label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.load(path), label

    def load(self, path):
        with open_image(path) as image:
            image = image.convert("RGB")
        return self.transform(image)


class StepBatchSampler(torch.utils.data.Sampler):
    """Infinite batches of (index, augmentation seed), fully determined by (seed, step).

    Epoch e is a permutation drawn from seed e; step k reads batch k mod (n // batch_size) of epoch
    k // (n // batch_size) (incomplete batches are dropped). Starting at ``start_step`` reproduces
    exactly what an uninterrupted run would have read from that step on.

    With ``world_size`` > 1 each batch is split over the ranks: rank r reads its items r, r + world_size,
    ... (with their augmentation seeds), so together the ranks read exactly the single-process batch.
    """

    def __init__(self, num_items, batch_size, seed, start_step=0, rank=0, world_size=1):
        if num_items < batch_size:
            raise DataError(f"{num_items} training images is fewer than the batch size {batch_size}; "
                            "lower --batch-size")
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

"""The files of a folder dataset, ROOT/<domain>/<class>/<image>: their index, labels and the check that PIL can
read each. Needs neither torch nor numpy, so that `clipood train` refuses a bad data layout at once."""
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .settings import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


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


def describe_error(error):
    return f"{type(error).__name__}: {error}"


def _readable(path):
    """None, or why PIL cannot read the file (a quick check: it does not decode the whole image)."""
    try:
        with Image.open(path) as image:
            check_pixel_mode(image)
            image.verify()
        return None
    except Exception as error:  # PIL raises many types for broken files
        return describe_error(error)


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


def check_pixel_mode(image):
    if image.mode in ("I", "F") and not is_16_bit_gray(image):
        raise ValueError(f"its {image.mode} pixels (32-bit) have no fixed range; save it with 8 or 16 bits")


def is_16_bit_gray(image):
    return image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PNG")  # older PIL: I

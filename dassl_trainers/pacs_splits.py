"""Split files for Dassl's PACS reader, written for a folder dataset.

Dassl's ``PACS`` dataset (dassl/data/datasets/dg/pacs.py) reads ``ROOT/pacs/images/<domain>/<class>/<image>``
through split files, ``ROOT/pacs/splits/<domain>_train_kfold.txt`` and ``<domain>_crossval_kfold.txt``: one
line per image, ``<domain>/<class>/<file> <label>``, the path relative to ``images/``, the label 1-based and
separated by one space. Source domains train on the train files and validate on the crossval files; a target
domain is tested on both together. Its domain names are PACS's: art_painting, cartoon, photo, sketch.

    python -m dassl_trainers.pacs_splits ROOT/pacs [--holdout-fraction 0.1] [--seed 0] [--overwrite]

Labels follow the sorted class folder names of all domains together (PACS's own labels are its class names
in that order). Of every class in every domain, ``holdout_fraction`` of the images (at least one when the
class has two or more) go to crossval, drawn with ``seed``; the rest to train.
"""
import argparse
import random
import sys
from pathlib import Path

from clipood_plugin.data import IMAGE_EXTENSIONS
from clipood_plugin.settings import DataError

SPLITS = ("train", "crossval")


def _images(class_folder):
    return sorted(path.name for path in class_folder.iterdir()
                  if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS)


def split_lines(dataset_dir, holdout_fraction=0.1, seed=0):
    """{domain: {"train": [line, ...], "crossval": [line, ...]}} for DATASET_DIR/images/<domain>/<class>/."""
    image_dir = Path(dataset_dir) / "images"
    if not image_dir.is_dir():
        raise DataError(f"{image_dir} is not a folder: lay out the images as {image_dir}/<domain>/<class>/<image>")
    if not 0 <= holdout_fraction < 1:
        raise DataError(f"the holdout fraction must be in [0, 1), not {holdout_fraction}")
    domains = sorted(path for path in image_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
    class_names = sorted({folder.name for domain in domains for folder in domain.iterdir() if folder.is_dir()})
    if not class_names:
        raise DataError(f"no class folders under {image_dir}/<domain>/")
    labels = {name: label for label, name in enumerate(class_names, start=1)}
    rng = random.Random(seed)
    lines = {}
    for domain in domains:
        lines[domain.name] = {split: [] for split in SPLITS}
        for class_name in class_names:
            folder = domain / class_name
            files = _images(folder) if folder.is_dir() else []
            for relative in (f"{domain.name}/{class_name}/{name}" for name in files):
                if " " in relative:
                    raise DataError(f"{image_dir / relative}: Dassl's split files cannot hold a path with a space; "
                                    "rename it")
            held_out = set(rng.sample(files, max(1, round(holdout_fraction * len(files))))) \
                if len(files) >= 2 and holdout_fraction > 0 else set()
            for name in files:
                split = "crossval" if name in held_out else "train"
                lines[domain.name][split].append(f"{domain.name}/{class_name}/{name} {labels[class_name]}")
    return lines


def write_split_files(dataset_dir, holdout_fraction=0.1, seed=0, overwrite=False):
    """Write DATASET_DIR/splits/<domain>_{train,crossval}_kfold.txt; returns the paths written."""
    lines = split_lines(dataset_dir, holdout_fraction, seed)
    split_dir = Path(dataset_dir) / "splits"
    paths = {split_dir / f"{domain}_{split}_kfold.txt": "".join(line + "\n" for line in domain_lines[split])
             for domain, domain_lines in lines.items() for split in SPLITS}
    existing = [path for path in paths if path.exists()]
    if existing and not overwrite:
        raise DataError(f"{existing[0]} exists (PACS's own split files?): keep it, or pass --overwrite to replace "
                        f"the {len(existing)} split file(s) there")
    split_dir.mkdir(exist_ok=True)
    for path, text in paths.items():
        path.write_text(text)
    return list(paths)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m dassl_trainers.pacs_splits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset_dir", help="the folder Dassl reads as PACS (ROOT/pacs), holding images/")
    parser.add_argument("--holdout-fraction", type=float, default=0.1,
                        help="share of each class and domain in the crossval file (default: 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the crossval draw (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace split files that exist")
    args = parser.parse_args(argv)
    try:
        paths = write_split_files(args.dataset_dir, args.holdout_fraction, args.seed, args.overwrite)
    except DataError as error:
        print(f"pacs_splits: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} split files to {paths[0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

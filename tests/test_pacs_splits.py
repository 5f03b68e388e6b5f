"""`python -m dassl_trainers.pacs_splits`: split files for a folder dataset, read back by Dassl's own PACS reader."""
import subprocess
import sys

import pytest
from PIL import Image

pytestmark = pytest.mark.needs("dassl", "wilds")  # Dassl imports wilds
DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
CLASSES = ("dog", "elephant", "giraffe")


def write_images(dataset_dir, images_per_class=5, skip=()):
    """DATASET_DIR/images/<domain>/<class>/<i>.png, without the (domain, class) pairs in ``skip``."""
    for domain in DOMAINS:
        for name in CLASSES:
            if (domain, name) in skip:
                continue
            folder = dataset_dir / "images" / domain / name
            folder.mkdir(parents=True)
            for i in range(images_per_class):
                Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / f"{i}.png")


def pacs_splits(dataset_dir, *args):
    return subprocess.run([sys.executable, "-m", "dassl_trainers.pacs_splits", str(dataset_dir), *args],
                          capture_output=True, text=True, timeout=120)


def dassls_pacs(root, sources, targets):
    from dassl.config import get_cfg_default
    from dassl.data.datasets import build_dataset

    cfg = get_cfg_default()
    cfg.DATASET.NAME, cfg.DATASET.ROOT = "PACS", str(root)
    cfg.DATASET.SOURCE_DOMAINS, cfg.DATASET.TARGET_DOMAINS = list(sources), list(targets)
    return build_dataset(cfg)


def test_dassls_pacs_reader_gets_every_image_with_its_class_folders_label(tmp_path):
    write_images(tmp_path / "pacs", skip={("photo", "elephant")})  # a class missing from one domain
    done = pacs_splits(tmp_path / "pacs", "--holdout-fraction", "0.2")
    assert done.returncode == 0, done.stderr
    assert "wrote 8 split files" in done.stdout

    dataset = dassls_pacs(tmp_path, ("art_painting", "cartoon", "photo"), ("sketch",))
    images = tmp_path / "pacs" / "images"
    for item in dataset.train_x + dataset.val + dataset.test:
        assert item.classname == item.impath.split("/")[-2]
        assert item.label == CLASSES.index(item.classname)  # the same label in every domain
    for domain_index, domain in enumerate(("art_painting", "cartoon", "photo")):
        train = {item.impath for item in dataset.train_x if item.domain == domain_index}
        val = [item for item in dataset.val if item.domain == domain_index]
        assert not train & {item.impath for item in val}
        assert train | {item.impath for item in val} == {str(path) for path in (images / domain).glob("*/*.png")}
        assert sorted(item.classname for item in val) == sorted(name for name in CLASSES  # 1 of 5 per class
                                                               if (domain, name) != ("photo", "elephant"))
    assert sorted(item.impath for item in dataset.test) == sorted(str(path) for path in (images / "sketch").glob("*/*.png"))


def test_existing_split_files_are_kept_unless_overwrite_and_paths_with_spaces_refused(tmp_path):
    write_images(tmp_path / "pacs", images_per_class=2)
    assert pacs_splits(tmp_path / "pacs").returncode == 0
    official = tmp_path / "pacs" / "splits" / "sketch_train_kfold.txt"
    official.write_text("sketch/dog/0.png 1\n")
    again = pacs_splits(tmp_path / "pacs")
    assert again.returncode == 2 and "exists" in again.stderr and "--overwrite" in again.stderr
    assert official.read_text() == "sketch/dog/0.png 1\n"
    assert pacs_splits(tmp_path / "pacs", "--overwrite").returncode == 0
    assert official.read_text() != "sketch/dog/0.png 1\n"

    Image.new("RGB", (8, 8)).save(tmp_path / "pacs" / "images" / "sketch" / "dog" / "a b.png")
    spaced = pacs_splits(tmp_path / "pacs", "--overwrite")
    assert spaced.returncode == 2 and "a b.png" in spaced.stderr and "space" in spaced.stderr


def test_a_missing_images_folder_names_the_layout(tmp_path):
    done = pacs_splits(tmp_path / "pacs")
    assert done.returncode == 2 and "<domain>/<class>/<image>" in done.stderr

"""Class names in DomainBed's label order (no DomainBed needed: its image datasets are torchvision
ImageFolders, used here directly)."""
import random
import types

import pytest
from torchvision.datasets import ImageFolder

from domainbed_adapter.class_names import FOLDER_CLASS_NAMES, LABEL_CLASS_NAMES, resolve_class_names


def image_folder(root, class_names):
    """An ImageFolder whose class folders are created in a shuffled order."""
    shuffled = list(class_names)
    random.Random(0).shuffle(shuffled)
    for name in shuffled:
        (root / name).mkdir(parents=True)
        (root / name / "x.png").write_bytes(b"")  # ImageFolder lists files by extension only
    return ImageFolder(str(root))


@pytest.mark.parametrize("dataset", sorted(FOLDER_CLASS_NAMES))
def test_tables_are_in_image_folder_label_order(tmp_path, dataset):
    assert image_folder(tmp_path, FOLDER_CLASS_NAMES[dataset]).classes == FOLDER_CLASS_NAMES[dataset]


def test_known_counts():
    counts = {name: len(names) for name, names in {**FOLDER_CLASS_NAMES, **LABEL_CLASS_NAMES}.items()}
    assert {k: counts[k] for k in ("VLCS", "PACS", "OfficeHome", "TerraIncognita", "DomainNet", "WILDSFMoW")} == \
        {"VLCS": 5, "PACS": 7, "OfficeHome": 65, "TerraIncognita": 10, "DomainNet": 345, "WILDSFMoW": 62}


def loaded(*environments):
    """A DomainBed-style dataset object: its environments in ``datasets``."""
    return types.SimpleNamespace(datasets=list(environments))


def test_resolution_order(tmp_path):
    disk = image_folder(tmp_path / "env", ["zebra", "Ant", "cat"])
    pacs = FOLDER_CLASS_NAMES["PACS"]
    assert resolve_class_names(3, ["a", "b", "c"], "PACS", loaded(disk))[0] == ["a", "b", "c"]
    assert resolve_class_names(3, None, "PACS", loaded(disk))[0] == ["Ant", "cat", "zebra"]
    assert resolve_class_names(7, None, "PACS", None)[0] == pacs
    assert resolve_class_names(2, None, "Debug224", loaded(object()))[0] == ["class 0", "class 1"]
    assert resolve_class_names(4, None, "SpawriousM2M_hard", types.SimpleNamespace(
        datasets=[], class_list=["bulldog", "corgi", "dachshund", "labrador"]))[0][1] == "corgi"


def test_a_count_that_does_not_match_is_an_error():
    with pytest.raises(ValueError, match="7 class names .* 6 classes"):
        resolve_class_names(6, None, "PACS", None)
    with pytest.raises(ValueError, match="2 class names from the hparam"):
        resolve_class_names(3, ["a", "b"], "PACS", None)


def test_environments_with_different_class_folders_are_an_error(tmp_path):
    first = image_folder(tmp_path / "a", ["bird", "cat"])
    second = image_folder(tmp_path / "b", ["bird", "dog"])
    with pytest.raises(ValueError, match="different class folders"):
        resolve_class_names(2, None, "VLCS", loaded(first, second))


def test_unknown_dataset_asks_for_class_names_and_no_dataset_warns():
    with pytest.raises(ValueError, match="class_names"):
        resolve_class_names(3, None, "MyDataset", loaded(object()))
    with pytest.warns(UserWarning, match="placeholder"):
        assert resolve_class_names(2)[0] == ["class 0", "class 1"]


def test_the_registry_default_yields_to_the_loaded_folders_an_explicit_list_does_not(tmp_path):
    pacs = FOLDER_CLASS_NAMES["PACS"]
    renamed = image_folder(tmp_path / "env", [name.capitalize() for name in pacs])  # same order, other names
    assert resolve_class_names(7, pacs, "PACS", loaded(renamed)) == (renamed.classes, "the class folders of PACS")
    mine = [f"a {name}" for name in pacs]
    assert resolve_class_names(7, mine, "PACS", loaded(renamed)) == (mine, "the hparam class_names")
    assert resolve_class_names(7, pacs, "PACS", None) == (pacs, "the hparam class_names")  # outside train.py

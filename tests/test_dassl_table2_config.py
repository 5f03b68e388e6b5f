"""The ImageNet config (paper Table 2) trains on 16 shots by default, as CoOp's and CoCoOp's rows do,
merged the way CoOp's and Dassl's train.py merge it: Dassl's defaults, then the config file, then the
command line."""
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dassl" / "trainers" / "CLIPood" / "vit_b16_base2new.yaml"


pytestmark = pytest.mark.needs("dassl")


@pytest.fixture
def dassl_cfg():
    import dassl_trainers
    dassl_trainers.register()  # TRAINER.CLIPOOD must exist before the file merges
    from dassl.config import get_cfg_default
    cfg = get_cfg_default()
    cfg.merge_from_list(["DATASET.NAME", "ImageNet"])  # what CoOp's configs/datasets/imagenet.yaml sets
    cfg.merge_from_file(str(CONFIG))
    return cfg


def test_imagenet_defaults_to_16_shots_over_dassls_full_training_set(dassl_cfg):
    from dassl.config import get_cfg_default
    assert get_cfg_default().DATASET.NUM_SHOTS == -1  # Dassl alone: every training image
    assert dassl_cfg.DATASET.NUM_SHOTS == 16


def test_the_command_line_still_chooses_the_full_training_set(dassl_cfg):
    dassl_cfg.merge_from_list(["DATASET.NUM_SHOTS", "-1"])
    assert dassl_cfg.DATASET.NUM_SHOTS == -1

"""The Dassl trainer under torchrun (gloo, 2 CPU processes) against one process on the same global batches.

Needs Dassl installed from a checkout (its configs), see tests/conftest.py. The generated images are plain colors,
so augmentation changes nothing and both runs see exactly the same inputs.
"""
import subprocess
import sys

import pytest
import torch

from test_dassl_integration import DASSL_ROOT, TRAINER_CONFIGS, checkpoint, data_root, printed, tiny_opts  # noqa: F401
from test_distributed import ENV, assert_same_weights, torchrun

pytestmark = pytest.mark.needs("dassl_checkout", "wilds")


def test_dassl_trainer_on_two_processes_matches_one_process(data_root, tmp_path):  # noqa: F811
    args = ["-m", "dassl_trainers.train", "--root", data_root, "--seed", "1",
            "--dataset-config-file", DASSL_ROOT / "configs/datasets/dg/pacs.yaml",
            "--config-file", TRAINER_CONFIGS / "vit_b16_dg.yaml", "--source-domains", "art_painting", "cartoon",
            "photo", "--target-domains", "sketch"]
    opts = tiny_opts(data_root, "DATALOADER.TRAIN_X.BATCH_SIZE", "6", "OPTIM.MAX_EPOCH", "2")
    one = subprocess.run([sys.executable, *map(str, args), "--output-dir", tmp_path / "one", *opts], cwd=tmp_path,
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    two = torchrun([*args, "--output-dir", tmp_path / "two", *opts], cwd=tmp_path)

    assert "2 processes split each batch of 6" in two and "[default1]" not in two  # rank 1 prints nothing
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["clipood", "log.txt", "tensorboard"]
    assert len(list((tmp_path / "two" / "tensorboard").iterdir())) == 1  # rank 0's event file only
    accuracy = printed(r"\* accuracy: ([\d.]+)%", two)
    assert accuracy and accuracy == printed(r"\* accuracy: ([\d.]+)%", one.stdout)
    expected, got = (checkpoint(tmp_path / d / "clipood" / "model.pth.tar-2") for d in ("one", "two"))
    assert got["step"] == expected["step"] == 6
    start = {name[len("visual."):]: value for name, value in torch.load(data_root / "tiny.pt").items()
             if name.startswith("visual.")}
    assert_same_weights(got["inference_encoder"], expected["inference_encoder"], start)

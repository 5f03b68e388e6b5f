"""Data-parallel training on the CPU (gloo, 2 processes) against single-process training on the same global
batches: the learner under DDP, and `clipood train` under torchrun (with a resume). The Dassl trainer's
distributed path is in test_distributed_dassl.py."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from clipood_plugin import CLIPoodLearner
from clipood_plugin.cli import main
from clipood_plugin.synthetic import make_demo_dataset

from conftest import CLASSES

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--tee", "1"]
STEPS = 4


def _flat(state, names):
    parts = []
    for name in names:
        value = state[name].flatten().double()
        if name.endswith("attn.in_proj_bias"):  # attention is invariant to the key biases: leave them out
            width = len(value) // 3  # query, key, value
            value = torch.cat([value[:width], value[2 * width:]])
        parts.append(value)
    return torch.cat(parts)


def assert_same_weights(got, expected, start):
    """``got`` equals ``expected`` up to float summation order: their distance is tiny next to the distance
    training moved the weights from ``start``. Not elementwise: where a gradient is rounding noise (the key
    biases; a unit no image activates) Adam scales that noise up to a full step of the learning rate."""
    names = sorted(name for name, value in expected.items() if value.is_floating_point())
    got, expected, start = (_flat(state, names) for state in (got, expected, start))
    assert (got - expected).norm() < 1e-3 * (expected - start).norm()


def learner(seed, **kwargs):
    torch.manual_seed(seed)
    return CLIPoodLearner(model_name="clipood-tiny", pretrained=None, class_names=CLASSES, total_steps=STEPS,
                          lr=1e-3, device="cpu", **kwargs)


def global_batches():
    """7 images per step: the ranks get 4 and 3, so the loss weighting of unequal shares is exercised."""
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(7, 3, 32, 32, generator=generator), torch.randint(0, len(CLASSES), (7,), generator=generator))
            for _ in range(STEPS)]


def _train_one_rank(rank, world_size, store_file, out_file):
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world_size)
    trained = learner(seed=100)  # random init: the same seed on every rank (the text tower is not synchronized)
    stats = [trained.update(images[rank::world_size], labels[rank::world_size]) for images, labels in global_batches()]
    flat = torch.cat([torch.cat([t.flatten() for t in m.state_dict().values()])
                      for m in (trained.image_encoder, trained.inference_encoder)])
    gathered = [torch.empty_like(flat) for _ in range(world_size)]
    torch.distributed.all_gather(gathered, flat)
    if rank == 0:
        torch.save({"ranks": gathered, "stats": stats, "live": trained.image_encoder.state_dict(),
                    "bma": trained.inference_encoder.state_dict()}, out_file)
    torch.distributed.destroy_process_group()


def test_learner_under_ddp_takes_the_single_process_steps_and_keeps_one_bma(tmp_path):
    mp.spawn(_train_one_rank, args=(2, str(tmp_path / "store"), str(tmp_path / "out.pt")), nprocs=2)
    result = torch.load(tmp_path / "out.pt", weights_only=True)
    assert torch.equal(result["ranks"][0], result["ranks"][1])  # same live weights and BMA on both ranks, bit for bit

    single = learner(seed=100)  # all 7 images of each step
    stats = [single.update(images, labels) for images, labels in global_batches()]
    for got, expected in zip(result["stats"], stats):
        assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        assert got["acc"] == pytest.approx(expected["acc"])
        assert (got["lr"], got["bma_weight"]) == (expected["lr"], expected["bma_weight"])
    start = learner(seed=100).image_encoder.state_dict()
    assert_same_weights(result["live"], single.image_encoder.state_dict(), start)
    assert_same_weights(result["bma"], single.inference_encoder.state_dict(), start)


# ----------------------------------------------------------------------------- clipood train under torchrun
FAST = ["--model", "clipood-tiny", "--pretrained", "none", "--lr", "1e-3", "--batch-size", "5",
        "--eval-every", "2", "--checkpoint-every", "2", "--workers", "0", "--steps", str(STEPS)]


def torchrun(args, cwd):
    done = subprocess.run([*TORCHRUN, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.parametrize("decode", ["cpu", "device"])
def test_clipood_train_on_two_processes_with_a_resume_matches_one_process(tmp_path, decode):
    data = make_demo_dataset(tmp_path / "shapes", images_per_class=6)
    common = ["train", "--data-dir", data, "--test-domains", "sketch", "--decode", decode, *FAST]
    assert main([*map(str, common), "--output-dir", str(tmp_path / "one")]) == 0

    two = tmp_path / "two"
    first = torchrun(["-m", "clipood_plugin", *common, "--output-dir", two, "--stop-after", 2], cwd=tmp_path)
    assert sorted(p.name for p in two.iterdir()) == ["checkpoint.pt", "tensorboard"]
    second = torchrun(["-m", "clipood_plugin", *common, "--output-dir", two, "--resume"], cwd=tmp_path)
    assert sorted(p.name for p in two.iterdir()) == ["model.pt", "results.json", "results.png", "tensorboard"]
    assert len(list((two / "tensorboard").iterdir())) == 2  # rank 0's event files only, one per command
    for log in (first, second):  # rank 1 prints nothing; rank 0 reports
        assert "[default1]" not in log and "[default0]" in log
    assert "resumed at step 2" in second and "wrote" in second

    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert one["accuracy"] == two["accuracy"] and one["history"] == two["history"]
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert two["bma_weights"] == one["bma_weights"]
    bma_one, bma_two = (torch.load(tmp_path / d / "model.pt", weights_only=True)["inference_encoder"]
                        for d in ("one", "two"))
    start = learner(seed=0).image_encoder.state_dict()  # `clipood train` seeds the random init with --seed (0)
    assert_same_weights(bma_two, bma_one, start)


@pytest.mark.parametrize("command", ["train", "demo"])
def test_under_torchrun_bad_input_stops_each_rank_before_the_process_group_forms(tmp_path, monkeypatch, capsys,
                                                                                 command):
    monkeypatch.setenv("WORLD_SIZE", "2")  # rank 1 of 2, with no rendezvous to join: joining would fail or wait
    monkeypatch.setenv("RANK", "1")
    args = ["--data-dir", str(tmp_path / "nowhere"), "--test-domains", "sketch"] if command == "train" else []
    assert main([command, *args, "--output-dir", str(tmp_path / "out"), *FAST]) == 2
    assert ("does not exist" if command == "train" else "runs in one process") in capsys.readouterr().err
    assert not torch.distributed.is_initialized() and not (tmp_path / "out").exists()

"""Integration: the CLIPood trainer inside the real Dassl (tools/train.py, python -m dassl_trainers.train) and the
real CoOp (train.py, through configs/dassl/base2new.sh), on tiny generated datasets in their on-disk layouts.

Needs Dassl installed from a checkout (``pip install --no-deps --no-build-isolation -e Dassl.pytorch``); the
CoOp test also needs COOP_ROOT=/path/to/CoOp. A test whose framework is missing skips with the reason (an
error under CLIPOOD_REQUIRE_FRAMEWORKS=1: tests/conftest.py). The model is
clipood-tiny with fixed random weights saved to a file (the "pretrained" weights), on the CPU.
"""
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import coop_root, dassl_root

pytestmark = pytest.mark.needs("dassl", "wilds")  # Dassl imports wilds
DASSL_ROOT = dassl_root()
COOP_ROOT = coop_root()
PROJECT = Path(__file__).resolve().parents[1]
CONFIGS = PROJECT / "configs" / "dassl"
TRAINER_CONFIGS = CONFIGS / "trainers" / "CLIPood"
PACS_CLASSES = ["dog", "elephant", "giraffe", "guitar"]
PETS_CLASSES = ["abyssinian", "beagle", "boxer", "chihuahua"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # 1 thread: the tiny model is faster so


def run(args, cwd, env=ENV):
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def image(path, rng):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), tuple(rng.randrange(256) for _ in range(3))).save(path)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """ROOT with pacs/ (Dassl's layout: images/<domain>/<class>/, splits/<domain>_<split>_kfold.txt, 1-based
    labels), oxford_pets/ (CoOp's: images/ and split_zhou_OxfordPets.json) and tiny.pt (the weights)."""
    import open_clip
    import torch

    import clipood_plugin

    root, rng = tmp_path_factory.mktemp("data"), random.Random(0)
    for domain in ("art_painting", "cartoon", "photo", "sketch"):
        for split, count in (("train", 3), ("crossval", 1)):
            lines = []
            for label, name in enumerate(PACS_CLASSES, start=1):
                for i in range(count):
                    relative = f"{domain}/{name}/{split}{i}.jpg"
                    image(root / "pacs" / "images" / relative, rng)
                    lines.append(f"{relative} {label}\n")
            (root / "pacs" / "splits").mkdir(parents=True, exist_ok=True)
            (root / "pacs" / "splits" / f"{domain}_{split}_kfold.txt").write_text("".join(lines))
    split = {"train": [], "val": [], "test": []}
    for label, name in enumerate(PETS_CLASSES):
        for part, count in (("train", 4), ("val", 2), ("test", 5)):
            for i in range(count):
                file_name = f"{name}_{part}{i}.jpg"
                image(root / "oxford_pets" / "images" / file_name, rng)
                split[part].append([file_name, label, name])
    (root / "oxford_pets" / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    open_clip.add_model_config(Path(clipood_plugin.__file__).parent / "model_configs")
    torch.manual_seed(0)
    torch.save(open_clip.create_model("clipood-tiny").state_dict(), root / "tiny.pt")
    return root


def tiny_opts(root, *more):
    return ["MODEL.BACKBONE.NAME", "clipood-tiny", "TRAINER.CLIPOOD.PRETRAINED", str(root / "tiny.pt"),
            "TRAINER.CLIPOOD.ITERS_PER_EPOCH", "3", "INPUT.SIZE", "(32,32)", "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TEST.BATCH_SIZE", "16", "USE_CUDA", "False", "TRAIN.CHECKPOINT_FREQ", "1", *more]


def printed(pattern, text):
    return [float(x) for x in re.findall(pattern, text)]


def checkpoint(path):
    import torch

    return torch.load(path, weights_only=True)["state_dict"]["learner"]


# ----------------------------------------------------------------------------- registration
def python_says(code, **env):
    return run([sys.executable, "-c", code], cwd=PROJECT, env={**ENV, **env}).split()


def test_import_hook_registers_trainer_and_config_without_loading_open_clip():
    code = ("import sys; from dassl.engine import TRAINER_REGISTRY; from dassl.config import get_cfg_default; "
            "cfg = get_cfg_default(); print('CLIPOOD' in cfg.TRAINER, 'SUBSAMPLE_CLASSES' in cfg.DATASET, "
            "'CLIPood' in TRAINER_REGISTRY.registered_names(), 'open_clip' in sys.modules)")
    assert python_says(code) == ["True", "True", "True", "False"]
    assert python_says(code, CLIPOOD_NO_AUTOREGISTER="1") == ["False", "False", "False", "False"]
    explicit = "import dassl_trainers; dassl_trainers.register(); dassl_trainers.register(); " + code
    assert python_says(explicit, CLIPOOD_NO_AUTOREGISTER="1") == ["True", "True", "True", "False"]
    # the trainer imported before Dassl: importing it imports dassl.engine, whose hook fires mid-import
    trainer_first = "from dassl_trainers import CLIPood; " + code
    assert python_says(trainer_first) == ["True", "True", "True", "False"]


@pytest.mark.parametrize("config", ["vit_b16_base2new", "vit_b16_dg", "vit_b16_dg_open_class"])
def test_configs_merge_into_dassls_defaults_and_pass_the_trainers_checks(config):
    from dassl.config import get_cfg_default

    from dassl_trainers.trainer import CLIPood

    cfg = get_cfg_default()
    cfg.merge_from_file(str(TRAINER_CONFIGS / f"{config}.yaml"))  # yacs type-checks every key
    CLIPood.check_cfg(None, cfg)
    for key, value, message in [("OPTIM.WARMUP_EPOCH", 1, "set OPTIM.WARMUP_EPOCH 0"),
                                ("OPTIM.NAME", "sgd", "set OPTIM.NAME adamw"),
                                ("OPTIM.LR_SCHEDULER", "single_step", "set OPTIM.LR_SCHEDULER cosine"),
                                ("TRAINER.CLIPOOD.PREC", "fp16", "TRAINER.CLIPOOD.PREC must be one of")]:
        wrong = cfg.clone()
        wrong.merge_from_list([key, value])
        with pytest.raises(ValueError, match=message):
            CLIPood.check_cfg(None, wrong)


# ----------------------------------------------------------------------------- Dassl
def dassl_train(root, out, config, *opts):
    return run([sys.executable, "tools/train.py", "--root", str(root), "--seed", "1", "--trainer", "CLIPood",
                "--dataset-config-file", "configs/datasets/dg/pacs.yaml",
                "--config-file", str(TRAINER_CONFIGS / config),
                "--source-domains", "art_painting", "cartoon", "photo", "--target-domains", "sketch",
                "--output-dir", str(out), *tiny_opts(root, "DATALOADER.TRAIN_X.BATCH_SIZE", "6", *opts)],
               cwd=DASSL_ROOT)


@pytest.mark.needs("dassl_checkout")
def test_dassl_open_classes_then_resume_ends_where_the_uninterrupted_run_does(data_root, tmp_path):
    log = dassl_train(data_root, tmp_path / "full", "vit_b16_dg_open_class.yaml", "OPTIM.MAX_EPOCH", "2")
    assert "training on 2 base classes" in log and "classes the learner trains on: dog, elephant\n" in log
    assert "(8 base / 8 new test images)" in log  # the target domain, all 4 classes
    (base,), (new,), (h,) = (printed(rf"\* {key}: ([\d.]+)%", log) for key in ("base_accuracy", "new_accuracy",
                                                                             "harmonic_mean"))
    assert h == pytest.approx(2 * base * new / (base + new) if base + new else 0.0, abs=0.1)
    full = tmp_path / "full" / "clipood"
    assert "training_step" in checkpoint(full / "model.pth.tar-1")  # what resuming needs
    assert "training_step" not in checkpoint(full / "model.pth.tar-2")  # a finished run keeps what predicts

    # interrupted after epoch 1: its directory holds that epoch's checkpoint only
    shutil.copytree(tmp_path / "full", tmp_path / "resumed")
    (tmp_path / "resumed" / "clipood" / "model.pth.tar-2").unlink()
    (tmp_path / "resumed" / "clipood" / "checkpoint").write_text("model.pth.tar-1\n")
    resumed_log = dassl_train(data_root, tmp_path / "resumed", "vit_b16_dg_open_class.yaml", "OPTIM.MAX_EPOCH", "2")
    assert "Previous epoch: 1" in resumed_log and "epoch [1/2]" not in resumed_log
    expected = checkpoint(full / "model.pth.tar-2")
    got = checkpoint(tmp_path / "resumed" / "clipood" / "model.pth.tar-2")
    assert got["step"] == expected["step"] == 6
    for key, value in expected["inference_encoder"].items():  # the BMA model, bit for bit
        assert got["inference_encoder"][key].equal(value), key
    def final_test(text):
        return text.split("Finish training")[1].split("Elapsed")[0]

    assert final_test(resumed_log) == final_test(log)


@pytest.mark.needs("dassl_checkout")
def test_dassl_resume_refuses_a_changed_run_and_an_empty_checkpoint_pointer(data_root, tmp_path):
    dassl_train(data_root, tmp_path, "vit_b16_dg.yaml", "OPTIM.MAX_EPOCH", "2")
    folder = tmp_path / "clipood"
    (folder / "model.pth.tar-2").unlink()  # interrupted after epoch 1
    (folder / "checkpoint").write_text("model.pth.tar-1\n")
    kept = {path.name: path.read_bytes() for path in folder.iterdir()}

    def resume(*opts):
        done = subprocess.run(
            [sys.executable, "tools/train.py", "--root", str(data_root), "--seed", "1", "--trainer", "CLIPood",
             "--dataset-config-file", "configs/datasets/dg/pacs.yaml", "--config-file",
             str(TRAINER_CONFIGS / "vit_b16_dg.yaml"), "--source-domains", "art_painting", "cartoon", "photo",
             "--target-domains", "sketch", "--output-dir", str(tmp_path),
             *tiny_opts(data_root, "DATALOADER.TRAIN_X.BATCH_SIZE", "6", "OPTIM.MAX_EPOCH", "2", *opts)],
            cwd=DASSL_ROOT, env=ENV, capture_output=True, text=True, timeout=600)
        assert done.returncode != 0, done.stdout[-2000:]
        return done.stderr.strip().splitlines()[-1]

    # F-H10, F-H11, F-H12: one line naming each changed key with its old and new value
    refusal = resume("TRAINER.CLIPOOD.MMS_LAMBDA", "0.9", "TRAINER.CLIPOOD.MARGIN_KIND", "fixed",
                     "TRAINER.CLIPOOD.TEMPLATES", "['a sketch of a {}.']")
    for change in ("TRAINER.CLIPOOD.MMS_LAMBDA 0.3 -> 0.9", "TRAINER.CLIPOOD.MARGIN_KIND 'adaptive' -> 'fixed'",
                   "TRAINER.CLIPOOD.TEMPLATES ('a photo of a {}.',) -> ('a sketch of a {}.',)"):
        assert change in refusal
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == kept
    # F-L15: what a kill during Dassl's in-place write of the pointer leaves
    (folder / "checkpoint").write_text("")
    refusal = resume()
    assert "clipood/checkpoint, which names the checkpoint to resume from, is empty" in refusal
    assert "write 'model.pth.tar-1'" in refusal


@pytest.mark.needs("dassl_checkout")  # its configs/
def test_train_entry_runs_dassl_datasets_and_eval_only_reloads_the_model(data_root, tmp_path):
    common = ["--root", str(data_root), "--seed", "1",
              "--dataset-config-file", str(DASSL_ROOT / "configs/datasets/dg/pacs.yaml"),
              "--config-file", str(TRAINER_CONFIGS / "vit_b16_dg.yaml"), "--source-domains", "art_painting",
              "cartoon", "photo", "--target-domains", "sketch"]
    opts = tiny_opts(data_root, "DATALOADER.TRAIN_X.BATCH_SIZE", "6", "OPTIM.MAX_EPOCH", "1")
    entry = [sys.executable, "-m", "dassl_trainers.train"]
    log = run([*entry, *common, "--output-dir", str(tmp_path / "train"), *opts], cwd=tmp_path)
    trained = printed(r"\* accuracy: ([\d.]+)%", log)[-1]
    assert "3 steps" in log and "classes the learner trains on: dog, elephant, giraffe, guitar" in log
    evaluated = run([*entry, *common, "--output-dir", str(tmp_path / "eval"), "--eval-only", "--model-dir",
                     str(tmp_path / "train"), "--load-epoch", "1", *opts], cwd=tmp_path)
    assert printed(r"\* accuracy: ([\d.]+)%", evaluated) == [trained]
    # another horizon than the checkpoint's (e.g. evaluating ImageNet's model on a variant): rebuilt as the checkpoint's
    rebuilt = run([*entry, *common, "--output-dir", str(tmp_path / "eval2"), "--eval-only", "--model-dir",
                   str(tmp_path / "train"), *opts, "OPTIM.MAX_EPOCH", "4"], cwd=tmp_path)
    assert "rebuilding the learner with the checkpoint's settings {'total_steps': 3}" in rebuilt
    assert printed(r"\* accuracy: ([\d.]+)%", rebuilt) == [trained]


def test_decoding_on_the_device_gives_the_batches_of_dassls_own_loader(tmp_path):
    """TRAINER.CLIPOOD.DECODE device on a loader from Dassl's build_data_loader with the transform Dassl builds
    from the CLIPood config: for the same random state, the same crops, flips and labels as Dassl's PIL path."""
    import numpy as np
    import torch
    from PIL import Image
    from dassl.config import get_cfg_default
    from dassl.data.data_manager import build_data_loader
    from dassl.data.datasets import Datum
    from dassl.data.transforms import build_transform

    from dassl_trainers.loaders import DecodedOnDevice, leave_encoded

    cfg = get_cfg_default()
    cfg.merge_from_file(str(TRAINER_CONFIGS / "vit_b16_dg.yaml"))
    cfg.merge_from_list(["INPUT.SIZE", "(32,32)", "DATALOADER.NUM_WORKERS", "0"])
    rng, data = np.random.default_rng(0), []
    for i in range(8):  # photo-like JPEGs of several sizes
        pixels = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(pixels).resize((50 + 7 * i, 40 + 5 * i), Image.BICUBIC).save(path, quality=90)
        data.append(Datum(str(path), label=i % 4, domain=0))
    loader = build_data_loader(cfg, sampler_type="RandomSampler", data_source=data, batch_size=4,
                               tfm=build_transform(cfg, is_train=True), is_train=True)
    torch.manual_seed(5)
    expected = [(batch["img"], batch["label"]) for batch in loader]
    encoded, augmentation = leave_encoded(loader, "device", "cpu")
    torch.manual_seed(5)
    got = list(DecodedOnDevice(encoded, augmentation, torch.device("cpu")))
    assert len(got) == len(expected) == 2
    std = torch.tensor(cfg.INPUT.PIXEL_STD).view(1, 3, 1, 1)
    for (images, labels), batch in zip(expected, got):
        assert torch.equal(batch["label"], labels)
        assert ((batch["img"] - images).abs() * std * 255).max() <= 2.0  # pixel levels: PIL rounds to 8 bits


@pytest.mark.needs("dassl_checkout")
def test_dassl_training_with_decoding_on_the_device(data_root, tmp_path):
    on_cpu = dassl_train(data_root, tmp_path / "cpu", "vit_b16_dg.yaml", "OPTIM.MAX_EPOCH", "1")
    on_device = dassl_train(data_root, tmp_path / "device", "vit_b16_dg.yaml", "OPTIM.MAX_EPOCH", "1",
                            "TRAINER.CLIPOOD.DECODE", "device")
    assert "decoded and augmented on cpu (TRAINER.CLIPOOD.DECODE)" in on_device
    assert "3 iterations per epoch" in on_device
    # one-color images: every crop of them is the same picture, so both runs see the same pixels
    assert printed(r"\* accuracy: ([\d.]+)%", on_device) == printed(r"\* accuracy: ([\d.]+)%", on_cpu)


# ----------------------------------------------------------------------------- CoOp
def independent_new_class_predictions(root, state, template):
    """Predictions of the saved BMA encoder on the new classes' test images, written from scratch with
    open_clip: the tiny CLIP from its weights file, prompts of the new class names, cosine argmax."""
    import open_clip
    import torch
    from PIL import Image
    from torchvision import transforms

    model = open_clip.create_model("clipood-tiny", pretrained=str(root / "tiny.pt")).eval()
    model.visual.load_state_dict(state["inference_encoder"])
    new_classes = PETS_CLASSES[2:]
    tokenizer = open_clip.get_tokenizer("clipood-tiny")
    split = json.loads((root / "oxford_pets" / "split_zhou_OxfordPets.json").read_text())["test"]
    items = [(name, label - 2) for name, label, _ in split if label >= 2]
    to_input = transforms.Compose([transforms.ToTensor(), transforms.Normalize(
        (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])
    with torch.no_grad():
        text = model.encode_text(tokenizer([template.format(c) for c in new_classes]))
        images = torch.stack([to_input(Image.open(root / "oxford_pets" / "images" / name).convert("RGB"))
                              for name, _ in items])
        features = model.visual(images)
        scores = (features / features.norm(dim=-1, keepdim=True)) @ (text / text.norm(dim=-1, keepdim=True)).T
    return scores.argmax(dim=1).tolist(), [label for _, label in items]


@pytest.mark.needs("coop")
def test_coop_base2new_script_then_summary(data_root, tmp_path):
    import numpy as np
    import torch
    from sklearn.metrics import confusion_matrix

    out = tmp_path / "out"
    opts = tiny_opts(data_root, "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "TEST.COMPUTE_CMAT", "True",
                     "TRAINER.CLIPOOD.PER_DATASET.OxfordPets.OPTIM.MAX_EPOCH", "2")
    env = {**ENV, "COOP_ROOT": str(COOP_ROOT), "SEEDS": "1", "PYTHON": sys.executable, "EXTRA_OPTS": " ".join(opts)}
    summary = run(["bash", str(CONFIGS / "base2new.sh"), str(data_root), str(out), "oxford_pets"],
                  cwd=tmp_path, env=env)

    train_log = (out / "train_base/oxford_pets/seed1/log.txt").read_text()
    new_log = (out / "test_new/oxford_pets/seed1/log.txt").read_text()
    assert "classes the learner trains on: abyssinian, beagle\n" in train_log and "6 steps" in train_log
    assert "templates ('a photo of a {}, a type of pet.',)" in train_log
    assert "evaluating on 2 classes: boxer, chihuahua" in new_log and "model.pth.tar-2" in new_log
    base = printed(r"\* accuracy: ([\d.]+)%", train_log.split("Finish training")[1])[-1]
    new = printed(r"\* accuracy: ([\d.]+)%", new_log)[-1]
    row = next(line for line in summary.splitlines() if line.startswith("OxfordPets")).split()
    assert [float(x) for x in row[1:4]] == pytest.approx([base, new, 2 * base * new / (base + new)], abs=0.006)

    predictions, labels = independent_new_class_predictions(
        data_root, checkpoint(out / "train_base/oxford_pets/seed1/clipood/model.pth.tar-2"),
        "a photo of a {}, a type of pet.")
    assert new == pytest.approx(100 * np.mean(np.equal(predictions, labels)), abs=0.05)
    saved = torch.load(out / "test_new/oxford_pets/seed1/cmat.pt", weights_only=False)  # Dassl's row-normalized matrix
    assert np.allclose(saved, confusion_matrix(labels, predictions, normalize="true"))

    # the command form: --load-epoch N with CoOp's train.py directly
    again = run([sys.executable, "train.py", "--root", str(data_root), "--seed", "1", "--trainer", "CLIPood",
                 "--dataset-config-file", "configs/datasets/oxford_pets.yaml", "--config-file",
                 str(TRAINER_CONFIGS / "vit_b16_base2new.yaml"), "--output-dir", str(tmp_path / "again"),
                 "--model-dir", str(out / "train_base/oxford_pets/seed1"), "--load-epoch", "2", "--eval-only",
                 "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "new", *opts], cwd=COOP_ROOT)
    assert printed(r"\* accuracy: ([\d.]+)%", again) == [new]

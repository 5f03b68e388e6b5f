"""load_clip: offline behaviour, name resolution, clear errors."""
import os
import time

import huggingface_hub
import pytest

from clipood_plugin import WeightsUnavailableError, load_clip
from clipood_plugin.backbone import resolve_model_name


def test_tiny_model_works_offline():
    model, preprocess_train, preprocess_val, tokenizer = load_clip("clipood-tiny", pretrained=None)
    assert model.visual.image_size in (32, (32, 32))
    assert tokenizer(["a photo of a dog."]).shape == (1, 77)


def test_coop_style_names_map_to_open_clip():
    assert resolve_model_name("ViT-B/16") == "ViT-B-16"
    with pytest.raises(ValueError, match="ViT-B-16"):
        resolve_model_name("ViT-B-61")


def test_unreachable_weights_fail_fast_with_the_fix(monkeypatch, tmp_path):
    # An empty weight cache and a hub endpoint where nothing listens: the situation of an offline machine.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="pass its path as pretrained"):
        load_clip("ViT-B-16", pretrained="openai")
    assert time.monotonic() - start < 10


def test_bad_pretrained_values_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_clip("clipood-tiny", pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="tags are"):
        load_clip("ViT-B-16", pretrained="no-such-tag")


def test_local_checkpoint_file_is_loaded(tmp_path):
    import torch
    torch.manual_seed(3)
    model, *_ = load_clip("clipood-tiny", pretrained=None)
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    torch.manual_seed(4)
    loaded, *_ = load_clip("clipood-tiny", pretrained=str(path))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_an_openai_torchscript_archive_loads_its_weights_into_the_quickgelu_architecture(tmp_path):
    import torch
    from open_clip.transformer import QuickGELU
    from torch import nn

    from clipood_plugin import CLIPoodLearner
    from clipood_plugin.backbone import resolve_architecture
    from pretrained_cache import random_weights, write_openai_archive

    weights = random_weights("clipood-tiny-quickgelu", seed=5)
    model, *_ = load_clip("clipood-tiny-quickgelu", pretrained=None)
    model.load_state_dict(weights)
    archive = write_openai_archive(tmp_path / "tiny.pt", model)
    assert resolve_architecture("clipood-tiny", str(archive)) == "clipood-tiny-quickgelu"
    loaded, *_ = load_clip("clipood-tiny", pretrained=str(archive))
    assert {type(m) for m in loaded.modules() if isinstance(m, (nn.GELU, QuickGELU))} == {QuickGELU}
    assert loaded.state_dict().keys() == weights.keys()
    assert all(torch.equal(loaded.state_dict()[key], value) for key, value in weights.items())
    # a learner records the architecture, so its checkpoint reloads into a learner built the same way
    learner = CLIPoodLearner(model_name="clipood-tiny", pretrained=str(archive), class_names=["a", "b"],
                             total_steps=1, device="cpu")
    assert learner.config["model_name"] == "clipood-tiny-quickgelu"
    CLIPoodLearner(model_name="clipood-tiny", pretrained=str(archive), class_names=["a", "b"], total_steps=1,
                   device="cpu").load_state_dict(learner.state_dict())


def test_weights_of_another_model_are_a_clear_error(tmp_path):
    import torch
    torch.save(load_clip("clipood-tiny", pretrained=None)[0].state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(ValueError, match="do not fit open_clip model 'RN50'"):
        load_clip("RN50", pretrained=str(tmp_path / "tiny.pt"))


def python(code, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_the_tiny_models_intended_random_init_is_built_without_open_clips_warning():
    """open_clip logs "No pretrained weights loaded for model 'clipood-tiny'" on every build of the tiny model
    (training, evaluate, load_learner): that random init is what was asked for. Its other warnings stay, and
    so does the same warning for any other model (a random CLIP is worth a word)."""
    done = python("import logging\n"
                  "from clipood_plugin import load_clip\n"
                  "load_clip('clipood-tiny', pretrained=None)\n"
                  "logging.warning(\"No pretrained weights loaded for model 'ViT-B-16'. Model initialized randomly.\")\n"
                  "logging.warning(\"Model clipood-tiny initialized partially.\")\n")
    assert done.returncode == 0, done.stderr
    assert "No pretrained weights loaded for model 'clipood-tiny'" not in done.stderr
    assert "WARNING:root:No pretrained weights loaded for model 'ViT-B-16'" in done.stderr
    assert "WARNING:root:Model clipood-tiny initialized partially." in done.stderr


BROKEN_TORCHVISION = """
import importlib.abc, sys
class BrokenTorchvision(importlib.abc.MetaPathFinder):  # what a CUDA torchvision beside a CPU torch raises
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
sys.meta_path.insert(0, BrokenTorchvision())
from clipood_plugin.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", [["demo", "--steps", "2"], ["train", "--data-dir", "{shapes}", "--test-domains",
                                                                 "sketch"], ["evaluate", "model.pt", "--data-dir", "shapes"]])
def test_a_torchvision_that_does_not_fit_torch_is_one_line_naming_the_pair_and_the_fix(tmp_path, command):
    from importlib import metadata

    import torch

    from clipood_plugin.files import LOCK_FILE
    from clipood_plugin.synthetic import make_demo_dataset

    # train checks its data before it imports torchvision: it gets a dataset to reach that import
    command = [str(make_demo_dataset(tmp_path / "shapes", images_per_class=2)) if part == "{shapes}" else part
               for part in command]
    done = python(BROKEN_TORCHVISION, *command, *(["--output-dir", str(tmp_path / "out")] if command[0] != "evaluate"
                                                    else []))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr[-3000:]
    torch_release = torch.__version__.split("+")[0]
    # the pair installed here is one that matches: the fix must name exactly its versions
    torchvision_release = metadata.version("torchvision").split("+")[0]
    assert done.stderr.startswith(f"clipood {command[0]}: error: torch {torch.__version__} and torchvision "
                                  f"{metadata.version('torchvision')} do not match (importing torchvision: operator "
                                  "torchvision::nms does not exist): reinstall them together")
    assert f"pip install --force-reinstall torch=={torch_release} torchvision=={torchvision_release}" in done.stderr
    out = tmp_path / "out"
    assert not out.exists() or set(os.listdir(out)) <= {LOCK_FILE}  # no run file


def test_the_fix_for_a_cpu_torch_beside_a_cuda_torchvision_installs_both_from_the_cpu_index():
    from clipood_plugin.packages import torch_pair_mismatch

    # torch 2.11 was released with torchvision 0.26 (and 2.5 with 0.20), from PyTorch's release notes
    message = torch_pair_mismatch("2.11.0+cpu", "0.26.0+cu128", RuntimeError("operator torchvision::nms does not exist"))
    assert message.endswith("pip install --force-reinstall torch==2.11.0 torchvision==0.26.0 "
                            "--index-url https://download.pytorch.org/whl/cpu")
    assert torch_pair_mismatch("2.5.1", "0.19.0", RuntimeError("x")).endswith("torch==2.5.1 torchvision==0.20.1")


@pytest.mark.needs("transformers")
def test_unreachable_siglip_weights_name_the_input_and_the_tokenizer_a_file_does_not_bring(monkeypatch, tmp_path):
    """Round 3: the advice named the weights file only; a local file gets OpenAI's input unless told, and
    SigLIP's tokenizer comes from the Hugging Face cache. Both are named, in each front end's terms."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(WeightsUnavailableError) as raised:
        load_clip("ViT-B-16-SigLIP", pretrained="webli")
    message = str(raised.value)
    assert "image_norm='ViT-B-16-SigLIP/webli'" in message and "mean [0.5, 0.5, 0.5], std [0.5, 0.5, 0.5]" in message
    assert "tokenizer 'timm/ViT-B-16-SigLIP'" in message and "HF_HUB_OFFLINE=1" in message
    cli = str(raised.value.worded_for("--pretrained {path}", "--model clipood-tiny", "--image-norm {norm}"))
    assert "--pretrained /path/to/ViT-B-16-SigLIP.bin" in cli and "--image-norm ViT-B-16-SigLIP/webli" in cli
    with pytest.raises(WeightsUnavailableError) as openai:  # OpenAI's weights: a file gets their input already
        load_clip("ViT-B-16", pretrained="openai")
    assert "image_norm" not in str(openai.value) and "tokenizer" not in str(openai.value)

"""load_clip: offline behaviour, name resolution, clear errors."""
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

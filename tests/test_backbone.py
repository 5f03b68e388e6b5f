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

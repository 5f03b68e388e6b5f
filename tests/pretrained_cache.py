"""Synthetic pretrained weights for offline tests of the pretrained paths.

``write_hub_cache_entry`` lays a state dict out as huggingface_hub stores a download of an open_clip tag
(models--<org>--<repo>/snapshots/<revision>/<file>, refs/main naming the revision), so that open_clip's
own tag resolution finds it in HF_HUB_CACHE without a network. ``write_openai_archive`` writes weights
as OpenAI's original TorchScript files hold them. ``zero_shot_logits`` is open_clip's own zero-shot
classifier, the reference the loaded and exported models are held to.
"""
import os
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

from clipood_plugin.backbone import resolve_model_name

REVISION = "0123456789abcdef0123456789abcdef01234567"
HF_WEIGHTS_NAME = "open_clip_pytorch_model.bin"  # open_clip's file name when a tag's hf_hub names none


def random_weights(model_name, seed=0):
    """A state dict of ``model_name``'s exact shapes (random init, fixed seed)."""
    torch.manual_seed(seed)
    return open_clip.create_model(resolve_model_name(model_name)).state_dict()


def write_hub_cache_entry(cache_dir, model_name, tag, state_dict, files=None, absent=()):
    """The file ``tag`` of ``model_name`` resolves to under ``cache_dir``, holding ``state_dict``; ``files``
    (name -> text) beside it in the repo, e.g. a tokenizer's, and ``absent`` the names a download found missing
    on the hub (the cache records them in .no_exist/)."""
    repo_id, filename = os.path.split(open_clip.get_pretrained_cfg(model_name, tag)["hf_hub"])
    repo = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    path = repo / "snapshots" / REVISION / (filename or HF_WEIGHTS_NAME)
    path.parent.mkdir(parents=True)
    torch.save(state_dict, path)
    for name, text in (files or {}).items():
        (path.parent / name).write_text(text)
    for name in absent:
        (repo / ".no_exist" / REVISION).mkdir(parents=True, exist_ok=True)
        (repo / ".no_exist" / REVISION / name).write_text("")
    return path


def write_openai_archive(path, model):
    """``model`` saved as OpenAI's TorchScript CLIP files are: its weights plus ``input_resolution``, and
    the attention mask a constant, not state."""
    mask = model._buffers.pop("attn_mask")
    model.attn_mask = mask
    model.register_buffer("input_resolution", torch.tensor(model.visual.image_size[0]))
    torch.jit.script(model).save(str(path))
    return path


def zero_shot_logits(model, model_name, class_names, templates, images):
    """open_clip's zero-shot procedure on ``model`` as open_clip built it: prompt ensemble, cosine x scale."""
    classifier = open_clip.build_zero_shot_classifier(
        model, open_clip.get_tokenizer(model_name), class_names, templates, device="cpu")
    with torch.no_grad():
        return model.logit_scale.exp() * F.normalize(model.encode_image(images), dim=-1) @ classifier

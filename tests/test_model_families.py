"""open_clip's model families, one tag each, offline: each loads the architecture open_clip builds for that tag,
predicts open_clip's own logits (SigLIP's with their logit bias), trains a step, and exports to a file that
plain open_clip reloads to the same predictions. The SigLIP stand-in also trains from each front end:
`clipood train`, DomainBed's algorithm and Dassl's trainer (these two in this process, where it is registered).

Every row is a tiny stand-in of the real model (families.py: the real config shrunk in width and depth, the
real tag's pretrained config) loaded from a synthetic hub-cache entry of random weights: the real towers are
too slow on CI's 2 cores. The SigLIP rows need `transformers` (their tokenizer is Hugging Face's), and read a
synthetic tokenizer from the same hub repo as the weights, where a download puts it.

``family_learner`` is the fixture each test takes: the stand-in's name, its tag and a learner loaded from them.
The stand-ins keep the real tag's input (size, normalization, resize), which the input test holds to open_clip's
own preprocess for the tag.
"""
import json
import re
import sys
from types import SimpleNamespace

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import transforms

from clipood_plugin import CLIPoodLearner, ImageInput, InputAdapter, MissingPackageError, load_clip
from clipood_plugin.cli import main
from clipood_plugin.synthetic import make_demo_dataset
from conftest import use_hub_cache
from families import FAMILIES, hugging_face_tokenizer_files, register_standins
from pretrained_cache import write_hub_cache_entry
from test_dassl_integration import data_root  # noqa: F401 (a fixture)
from test_image_input import IMAGENET_MEAN, IMAGENET_STD, normalized, photo, within_pil_levels

CLASS_NAMES = ["dog", "cat", "golden_retriever"]
TEMPLATE = "a photo of a {}."  # the paper's single template
LOGIT_BIAS = -7.5  # a SigLIP model's, set in its synthetic weights (open_clip initializes it to -10)
FAMILY_PARAMS = [pytest.param(family, id=family.id, marks=pytest.mark.needs(*family.needs)) for family in FAMILIES]


@pytest.fixture(scope="session")
def standins(tmp_path_factory):
    register_standins(tmp_path_factory.mktemp("standin_configs"))


@pytest.fixture(scope="session")
def family_weights(standins, hub_cache_dir):
    """{family: the path of its synthetic hub-cache entry}, written on first use of each family."""
    written = {}

    def weights(family):
        if family not in written:
            torch.manual_seed(0)
            state = open_clip.create_model(open_clip_name(family)).state_dict()
            files, absent = hugging_face_tokenizer_files() if family.needs else ({}, ())
            if "logit_bias" in state:
                state["logit_bias"] = torch.tensor([LOGIT_BIAS])
            written[family] = write_hub_cache_entry(hub_cache_dir, family.standin, family.tag, state, files, absent)
        return written[family]
    return weights


def open_clip_name(family):
    """The model open_clip builds for the stand-in's tag: its QuickGELU variant where the tag says quick_gelu."""
    quick_gelu = open_clip.get_pretrained_cfg(family.standin, family.tag).get("quick_gelu", False)
    name = family.standin
    return name if not quick_gelu or name.endswith("-quickgelu") else name + "-quickgelu"


@pytest.fixture
def family_hub_cache(hub_cache_dir, monkeypatch):
    use_hub_cache(monkeypatch, hub_cache_dir)
    return hub_cache_dir


@pytest.fixture(params=FAMILY_PARAMS)
def family_learner(request, family_weights, family_hub_cache):
    """(family, learner): a trainable CPU learner of the family's stand-in, loaded from its tag."""
    family = request.param
    family_weights(family)
    torch.manual_seed(0)
    learner = CLIPoodLearner(model_name=family.standin, pretrained=family.tag, class_names=CLASS_NAMES,
                             templates=(TEMPLATE,), total_steps=1, lr=1e-3, device="cpu")
    return SimpleNamespace(family=family, learner=learner)


def reference_model(family, pretrained=None):
    """open_clip's own model for the tag (or a file), built by open_clip alone."""
    model, _, _ = open_clip.create_model_and_transforms(open_clip_name(family), pretrained=pretrained or family.tag)
    return model.eval()


def open_clips_logits(model, name, images):
    """open_clip's classification logits: its get_logits (logit_scale * cos, + logit_bias where the model has
    one) against the class prompts, tokenized by open_clip's tokenizer for the model."""
    texts = [TEMPLATE.format(name.replace("_", " ")) for name in CLASS_NAMES]
    with torch.no_grad():
        return model.get_logits(images, open_clip.get_tokenizer(name)(texts))[0]


def encoder_input(learner, size, count=3, seed=0):
    """Images in the learner's input normalization, and what its image encoder receives of them (the
    input mapping, checked on its own, is not what these tests compare)."""
    images = torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return images, learner.input_adapter(images)


def module_types(module):
    return {name: type(child) for name, child in module.named_modules()}


def test_the_learner_builds_open_clips_modules_for_the_tag(family_learner):
    family, learner = family_learner.family, family_learner.learner
    reference = reference_model(family)
    assert module_types(learner.image_encoder) == module_types(reference.visual)
    text_side = learner.prompt_encoder.clip_model  # the rest of the CLIP model: its image tower removed
    reference.visual = nn.Identity()
    assert module_types(text_side) == module_types(reference)
    assert learner.config["model_name"] == open_clip_name(family)


def test_training_and_evaluation_tensors_are_open_clips_preprocess_of_the_tag(family_learner):
    """The input open_clip gives the tag (size, mean, std, interpolation, resize mode) reaches every path: the
    evaluation tensor of an image is open_clip's own preprocess of it; the training one, with its crop fixed
    to the whole (square) image and no flip, too; and DomainBed's and Dassl's ImageNet-normalized tensors
    become the tag's normalization of the same pixels through the learner's input mapping."""
    family, learner = family_learner.family, family_learner.learner
    reference, _, open_clip_val = open_clip.create_model_and_transforms(open_clip_name(family), pretrained=family.tag)
    cfg = reference.visual.preprocess_cfg
    assert learner.image_input.size == (lambda s: tuple(s) if isinstance(s, (list, tuple)) else (s, s))(cfg["size"])
    image = photo(50, 50)
    expected = open_clip_val(image)
    assert torch.equal(learner.preprocess_val(image), expected)
    assert within_pil_levels(learner, image, expected)
    pixels = transforms.functional.to_tensor(image).unsqueeze(0)
    from_imagenet = InputAdapter(learner.image_input, IMAGENET_MEAN, IMAGENET_STD)(normalized(pixels, IMAGENET_MEAN,
                                                                                              IMAGENET_STD))
    resized = F.interpolate(pixels, size=learner.image_input.size, mode=cfg["interpolation"], antialias=True)
    torch.testing.assert_close(from_imagenet, normalized(resized, cfg["mean"], cfg["std"]), rtol=0, atol=1e-5)


def test_zero_shot_logits_are_open_clips_with_siglips_logit_bias(family_learner):
    family, learner = family_learner.family, family_learner.learner
    reference = reference_model(family)
    assert (reference.logit_bias is not None) == ("SigLIP" in family.model)
    if reference.logit_bias is not None:
        assert reference.logit_bias.item() == LOGIT_BIAS == learner.logit_bias
    images, encoder_images = encoder_input(learner, learner.image_size)
    expected = open_clips_logits(reference, open_clip_name(family), encoder_images)
    torch.testing.assert_close(learner.predict(images), expected, rtol=0, atol=1e-4)


def test_one_update_and_an_export_that_plain_open_clip_reloads_to_the_same_logits(family_learner, tmp_path, capsys):
    family, learner = family_learner.family, family_learner.learner
    images, encoder_images = encoder_input(learner, learner.image_size)
    labels = torch.tensor([0, 1, 2])
    stats = learner.update(images, labels)
    assert torch.isfinite(torch.tensor(stats["loss"])) and stats["skipped"] == 0
    assert (learner.predict(images) - learner.predict(images, averaged=False)).abs().max() > 1e-4  # it trained
    torch.save(learner.state_dict(include_training_state=False), tmp_path / "model.pt")
    assert main(["export", str(tmp_path / "model.pt"), str(tmp_path / "exported.pt")]) == 0
    printed = capsys.readouterr().out
    name = json.loads((tmp_path / "exported.json").read_text())["open_clip_model"]
    assert name == open_clip_name(family)
    assert (f"open_clip.create_model_and_transforms({name!r}, pretrained={str(tmp_path / 'exported.pt')!r}, "
            f"image_mean={learner.image_input.mean}, image_std={learner.image_input.std}") in printed
    reloaded = reference_model(family, str(tmp_path / "exported.pt"))
    if reloaded.logit_bias is not None:  # SigLIP's bias travels with the export
        assert reloaded.logit_bias.item() == LOGIT_BIAS
    torch.testing.assert_close(open_clips_logits(reloaded, name, encoder_images), learner.predict(images),
                               rtol=0, atol=1e-4)


SIGLIP = next(family for family in FAMILIES if family.model == "ViT-B-16-SigLIP")


@pytest.mark.needs(*SIGLIP.needs)
def test_clipood_train_fine_tunes_and_evaluates_siglip(family_weights, family_hub_cache, tmp_path):
    family_weights(SIGLIP)
    data_dir = make_demo_dataset(tmp_path / "shapes", images_per_class=2)
    assert main(["train", "--data-dir", str(data_dir), "--test-domains", "sketch", "--steps", "2",
                 "--model", SIGLIP.standin, "--pretrained", SIGLIP.tag, "--lr", "1e-3", "--batch-size", "4",
                 "--eval-every", "2", "--workers", "0", "--output-dir", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config"]["model"] == SIGLIP.standin and set(results["accuracy"]) == {"zero_shot", "final", "bma"}


def test_a_model_whose_text_side_needs_transformers_names_it_in_one_line(standins, monkeypatch, tmp_path, capsys):
    """Without `transformers`: SigLIP's and SigLIP2's tokenizers, and a Hugging Face text tower (RoBERTa)."""
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    for model, part in (("ViT-B-16-SigLIP", "'timm/ViT-B-16-SigLIP'"), ("ViT-B-16-SigLIP2", "'timm/ViT-B-16-SigLIP2'"),
                        ("roberta-ViT-B-32", "'roberta-base'")):
        with pytest.raises(MissingPackageError, match=f"{part}.*: pip install transformers$"):
            load_clip(model, None)
    data_dir = make_demo_dataset(tmp_path / "shapes", images_per_class=1)
    code = main(["train", "--data-dir", str(data_dir), "--test-domains", "sketch", "--model", "ViT-B-16-SigLIP",
                 "--pretrained", "webli", "--steps", "1", "--output-dir", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and error.endswith("pip install transformers\n"), error


@pytest.mark.needs(*SIGLIP.needs)
def test_a_hugging_face_tokenizer_neither_cached_nor_downloadable_is_one_line(standins, tmp_path, monkeypatch):
    import huggingface_hub
    weights = tmp_path / "siglip.pt"  # the weights as a file, and a hub cache without the tokenizer's repo
    torch.save(open_clip.create_model(SIGLIP.standin).state_dict(), weights)
    use_hub_cache(monkeypatch, tmp_path / "empty_cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network
    with pytest.raises(FileNotFoundError, match="tokenizer of clipood-test-ViT-B-16-SigLIP .* not in the local cache"):
        load_clip(SIGLIP.standin, str(weights))


@pytest.mark.needs("domainbed", *SIGLIP.needs)
def test_domainbed_fine_tunes_siglip_from_its_imagenet_normalized_batches(family_weights, family_hub_cache):
    """DomainBed's own algorithm registry builds CLIPood on a SigLIP tag: its 224 ImageNet-normalized batches
    reach the model as SigLIP's input, the zero-shot predictions are open_clip's (logit bias included), and
    an update trains."""
    from domainbed import algorithms
    from domainbed.hparams_registry import default_hparams
    from domainbed_adapter import register

    family_weights(SIGLIP)
    register()
    hparams = {**default_hparams("CLIPood", "PACS"), "clip_model": SIGLIP.standin, "clip_pretrained": SIGLIP.tag,
               "class_names": CLASS_NAMES, "steps": 1, "lr": 1e-3, "clip_compile": "off"}
    algorithm = algorithms.get_algorithm_class("CLIPood")((3, 224, 224), len(CLASS_NAMES), 3, hparams)
    reference = reference_model(SIGLIP)
    cfg = reference.visual.preprocess_cfg
    pixels = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    batch = normalized(pixels, IMAGENET_MEAN, IMAGENET_STD)
    siglip_input = normalized(pixels, cfg["mean"], cfg["std"])  # 224 already: no resize
    expected = open_clips_logits(reference, open_clip_name(SIGLIP), siglip_input)
    torch.testing.assert_close(algorithm.predict(batch), expected, rtol=0, atol=1e-4)
    stats = algorithm.update([(batch, torch.tensor([0, 1, 2]))])
    assert torch.isfinite(torch.tensor(stats["loss"]))
    assert (algorithm.predict(batch) - expected).abs().max() > 1e-4  # it trained


@pytest.mark.needs("dassl", "dassl_checkout", "wilds", *SIGLIP.needs)
def test_dassl_fine_tunes_and_evaluates_siglip(family_weights, family_hub_cache, data_root, tmp_path, capsys):
    """Dassl's trainer builder and training loop (in this process, where the stand-in is registered) on a SigLIP
    tag: Dassl's OpenAI-normalized batches become SigLIP's input, an epoch trains, and Dassl evaluates."""
    from dassl.engine import build_trainer

    from dassl_trainers import register
    from dassl_trainers.train import build_cfg, parse_args
    from test_dassl_integration import DASSL_ROOT, TRAINER_CONFIGS, tiny_opts

    family_weights(SIGLIP)
    register()
    opts = tiny_opts(data_root, "MODEL.BACKBONE.NAME", SIGLIP.standin, "TRAINER.CLIPOOD.PRETRAINED", SIGLIP.tag,
                     "INPUT.SIZE", "(224, 224)", "DATALOADER.TRAIN_X.BATCH_SIZE", "6", "OPTIM.MAX_EPOCH", "1",
                     "OPTIM.LR", "1e-3", "TRAINER.CLIPOOD.ITERS_PER_EPOCH", "2", "TRAINER.CLIPOOD.COMPILE", "off")
    cfg = build_cfg(parse_args([
        "--root", str(data_root), "--seed", "1", "--source-domains", "art_painting", "cartoon", "photo",
        "--target-domains", "sketch", "--dataset-config-file", str(DASSL_ROOT / "configs/datasets/dg/pacs.yaml"),
        "--config-file", str(TRAINER_CONFIGS / "vit_b16_dg.yaml"), "--output-dir", str(tmp_path / "run"), *opts]))
    trainer = build_trainer(cfg)
    learner = trainer.learner
    assert learner.image_input == ImageInput.of_model(reference_model(SIGLIP)) and learner.logit_bias == LOGIT_BIAS
    initial = {name: p.detach().clone() for name, p in learner.image_encoder.named_parameters()}
    trainer.train()
    assert any(not torch.equal(p, initial[name]) for name, p in learner.image_encoder.named_parameters())
    assert re.search(r"\* accuracy: [\d.]+%", capsys.readouterr().out)

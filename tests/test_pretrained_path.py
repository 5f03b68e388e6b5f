"""The architecture follows the weights: QuickGELU for weights trained with it, offline, against open_clip's
own correctly built model on the same weights (a synthetic hub-cache entry of ViT-B-32 "openai")."""
import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from torch import nn

from clipood_plugin import CLIPoodLearner, load_clip
from clipood_plugin.backbone import MODEL_ALIASES, resolve_architecture
from pretrained_cache import zero_shot_logits

CLASS_NAMES = ["dog", "cat", "horse"]
TEMPLATES = ("a photo of a {}.", "a drawing of a {}.")


def activations(module):
    return {type(m) for m in module.modules() if isinstance(m, (nn.GELU, QuickGELU))}


def reference(model, images):
    return zero_shot_logits(model, "ViT-B-32", CLASS_NAMES, TEMPLATES, images)


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference_logits(synthetic_openai_weights, images):
    """open_clip's correct model for these weights, built from the file by its QuickGELU name; and, as a
    witness that the comparison can tell the activations apart, the same weights in nn.GELU."""
    model, _, _ = open_clip.create_model_and_transforms("ViT-B-32-quickgelu",
                                                       pretrained=str(synthetic_openai_weights.weights))
    logits = {"QuickGELU": reference(model.eval(), images)}
    for block in model.modules():
        if hasattr(block, "mlp") and isinstance(block.mlp.gelu, QuickGELU):
            block.mlp.gelu = nn.GELU()
    logits["GELU"] = reference(model, images)
    return logits


def test_every_quick_gelu_tag_resolves_to_its_quickgelu_architecture():
    """For every open_clip tag whose pretrained config says quick_gelu: open_clip's model config, as given
    and under its CoOp name, with the activation switched and nothing else."""
    coop_names = {name: coop for coop, name in MODEL_ALIASES.items()}
    tagged = [(m, t) for m, t in open_clip.list_pretrained() if open_clip.get_pretrained_cfg(m, t).get("quick_gelu")]
    assert {"ViT-B-16", "ViT-B-32", "ViT-L-14", "RN50"} <= {m for m, _ in tagged}
    for model, tag in tagged:
        expected = dict(open_clip.get_model_config(model), quick_gelu=True)
        for given in (model, coop_names.get(model, model)):
            architecture = resolve_architecture(given, tag)
            assert open_clip.get_model_config(architecture) == expected, (given, tag, architecture)
            assert resolve_architecture(architecture, tag) == architecture  # a recorded name rebuilds itself


def test_weights_without_quick_gelu_keep_the_name_given():
    assert not open_clip.get_pretrained_cfg("ViT-B-16", "laion2b_s34b_b88k").get("quick_gelu")
    assert resolve_architecture("ViT-B/16", "laion2b_s34b_b88k") == "ViT-B-16"
    assert resolve_architecture("ViT-B/16", None) == "ViT-B-16"


def test_load_clip_builds_the_openai_architecture_from_the_hub_cache(openai_hub_cache, images, reference_logits):
    gap = (reference_logits["QuickGELU"] - reference_logits["GELU"]).abs().max()
    assert gap > 1e-2  # the test below can tell nn.GELU from QuickGELU on these weights
    model, _, _, _ = load_clip("ViT-B/32", "openai")
    assert activations(model.visual) == activations(model.transformer) == {QuickGELU}
    torch.testing.assert_close(reference(model.eval(), images), reference_logits["QuickGELU"],
                               rtol=0, atol=1e-4)


def test_learner_predicts_as_open_clips_model_and_records_the_architecture(openai_hub_cache, images,
                                                                           reference_logits):
    learner = CLIPoodLearner(model_name="ViT-B-32", pretrained="openai", class_names=CLASS_NAMES,
                             templates=TEMPLATES, zero_shot=True, device="cpu")
    assert activations(learner.image_encoder) == activations(learner.prompt_encoder.clip_model) == {QuickGELU}
    assert learner.state_dict()["config"]["model_name"] == "ViT-B-32-quickgelu"
    torch.testing.assert_close(learner.predict(images), reference_logits["QuickGELU"], rtol=0, atol=1e-4)

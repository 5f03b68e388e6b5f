"""CLIPoodLearner on clipood-tiny: BMA of the real trajectory, exact resume, open classes, adapters."""
import io
from contextlib import nullcontext

import open_clip
import pytest
import torch
import torch.nn.functional as F

from clipood_plugin import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, InputAdapter
from clipood_plugin.averaging import beta_pdf

from conftest import CLASSES


def roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_predict_uses_equation_5_average_of_the_trajectory(make_learner, batches):
    learner = make_learner(beta=0.5)
    states = [{k: v.clone() for k, v in learner.image_encoder.state_dict().items()}]
    for images, labels in batches:
        stats = learner.update(images, labels)
        states.append({k: v.clone() for k, v in learner.image_encoder.state_dict().items()})
        assert set(stats) >= {"loss", "acc", "bma_weight", "lr"}
    T = len(batches)
    alphas = [beta_pdf((t + 0.5) / (T + 1), 0.5) for t in range(T + 1)]
    averaged = learner.inference_encoder.state_dict()
    for key, value in averaged.items():
        if value.is_floating_point():
            expected = sum(a * s[key].double() for a, s in zip(alphas, states)) / sum(alphas)
            assert torch.allclose(value.double(), expected, atol=1e-5), key
    assert all(p.dtype == torch.float32 for p in learner.image_encoder.parameters())


def test_resume_ends_bit_identical(make_learner, batches):
    uninterrupted = make_learner()
    for images, labels in batches:
        uninterrupted.update(images, labels)

    first = make_learner()
    for images, labels in batches[:2]:
        first.update(images, labels)
    saved = roundtrip(first.state_dict())
    resumed = make_learner(seed=123)  # different random init: everything must come from the checkpoint
    resumed.load_state_dict(saved)
    for images, labels in batches[2:]:
        resumed.update(images, labels)
    assert resumed.step == uninterrupted.step
    for a, b in zip(resumed.inference_encoder.state_dict().values(), uninterrupted.inference_encoder.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(resumed.image_encoder.state_dict().values(), uninterrupted.image_encoder.state_dict().values()):
        assert torch.equal(a, b)
    images = batches[0][0]
    assert torch.equal(resumed.predict(images), uninterrupted.predict(images))


def test_inference_checkpoint_predicts_the_same_without_training_state(make_learner, batches):
    learner = make_learner()
    for images, labels in batches[:3]:
        learner.update(images, labels)
    state = roundtrip(learner.state_dict(include_training_state=False))
    assert not {"optimizer", "image_encoder", "averager"} & set(state)
    assert set(state["inference_encoder"]) == set(learner.image_encoder.state_dict())  # no text tower
    reloaded = make_learner(seed=7)
    reloaded.load_state_dict(state)
    assert torch.equal(reloaded.predict(batches[4][0]), learner.predict(batches[4][0]))
    with pytest.raises(RuntimeError, match="inference-only"):
        reloaded.update(*batches[4])


def test_open_class_prediction_after_set_class_names(make_learner, batches):
    learner = make_learner(class_names=CLASSES[:2])
    images = batches[0][0]
    for images_, labels in batches[:2]:
        learner.update(images_, labels % 2)
    new_classes = ["zebra", "sea_lion", "dog"]
    learner.set_class_names(new_classes)
    logits = learner.predict(images)
    assert logits.shape == (images.shape[0], 3)
    # independent formulation: CLIP's own text tower and the averaged image tower, cosine x scale
    clip_model, tokenizer = learner.prompt_encoder.clip_model, open_clip.get_tokenizer("clipood-tiny")
    with torch.no_grad():
        text = F.normalize(clip_model.encode_text(tokenizer([f"a photo of a {c.replace('_', ' ')}." for c in new_classes])), dim=-1)
        image = F.normalize(learner.inference_encoder(images), dim=-1)
    assert torch.allclose(logits, learner.logit_scale * image @ text.T, atol=1e-5)


def test_zero_shot_is_plain_clip(make_learner):
    learner = make_learner(zero_shot=True, total_steps=None)
    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms("clipood-tiny")
    tokenizer = open_clip.get_tokenizer("clipood-tiny")
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        image = model.encode_image(images, normalize=True)
        text = model.encode_text(tokenizer([f"a photo of a {c.replace('_', ' ')}." for c in CLASSES]), normalize=True)
    expected = model.logit_scale.exp() * image @ text.T
    assert torch.allclose(learner.predict(images), expected, atol=1e-5)
    with pytest.raises(RuntimeError, match="zero_shot"):
        learner.update(images, torch.tensor([0, 1, 2]))


def test_template_ensemble_is_mean_of_normalized_then_renormalized(make_learner):
    templates = ("a photo of a {}.", "a sketch of a {}.")
    learner = make_learner(templates=templates, zero_shot=True)
    clip_model, tokenizer = learner.prompt_encoder.clip_model, open_clip.get_tokenizer("clipood-tiny")
    with torch.no_grad():
        per_template = [F.normalize(clip_model.encode_text(tokenizer([t.format(c.replace("_", " ")) for c in CLASSES])), dim=-1)
                        for t in templates]
    expected = F.normalize(sum(per_template) / 2, dim=-1)
    assert torch.allclose(learner.text_features, expected, atol=1e-6)
    assert not learner.text_features.requires_grad


def test_no_averaging_and_no_margin_is_plain_finetuning(make_learner, batches):
    learner = make_learner(margin=0.0, averaging="none")
    for images, labels in batches[:2]:
        learner.update(images, labels)
    images = batches[3][0]
    assert torch.equal(learner.predict(images), learner.predict(images, averaged=False))


def test_input_adapter_is_exact():
    raw = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    imagenet = (raw - torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    clip = (raw - torch.tensor(CLIP_MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD, dtype=torch.float64).view(1, 3, 1, 1)
    adapter = InputAdapter(32, IMAGENET_MEAN, IMAGENET_STD).double()
    assert torch.allclose(adapter(imagenet), clip, atol=1e-6)
    resized = InputAdapter(16, IMAGENET_MEAN, IMAGENET_STD).double()(imagenet)
    assert resized.shape[-2:] == (16, 16)
    assert torch.allclose(resized, F.interpolate(clip, size=(16, 16), mode="bicubic", antialias=True), atol=1e-6)
    gray = torch.rand(2, 1, 8, 8)
    assert torch.equal(InputAdapter(8)(gray), gray.expand(-1, 3, -1, -1))


def test_learner_adapts_imagenet_inputs(make_learner):
    learner = make_learner(zero_shot=True, input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD)
    clip_learner = make_learner(zero_shot=True)
    raw = torch.rand(2, 3, 32, 32)
    to = lambda mean, std: (raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(learner.predict(to(IMAGENET_MEAN, IMAGENET_STD)), clip_learner.predict(to(CLIP_MEAN, CLIP_STD)), atol=1e-4)


def test_bad_input_is_a_clear_error(make_learner, batches):
    learner = make_learner(total_steps=1)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        learner.update(batches[0][0], torch.tensor([0, 1, 2, 3, 4, 0]))
    learner.update(*batches[0])
    with pytest.raises(RuntimeError, match="total_steps=1"):
        learner.update(*batches[0])
    with pytest.raises(ValueError, match="total_steps"):
        make_learner(total_steps=None)
    with pytest.raises(ValueError, match="averaging"):
        make_learner(averaging="swa")
    with pytest.raises(ValueError, match="template"):
        make_learner(templates=("no placeholder",))
    other = make_learner(total_steps=5)
    with pytest.raises(ValueError, match="total_steps"):
        other.load_state_dict(learner.state_dict())


@pytest.mark.parametrize("mode", ["on", "reduce-overhead"])
def test_compiled_step_matches_the_eager_one(make_learner, batches, mode):
    eager, compiled = make_learner(compile="off"), make_learner(compile=mode)
    for images, labels in batches[:2]:
        a, b = eager.update(images, labels), compiled.update(images, labels)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    for (name, x), y in zip(eager.inference_encoder.named_parameters(), compiled.inference_encoder.parameters()):
        if name.endswith("attn.in_proj_bias"):
            # the key bias cancels in the softmax: its gradient is rounding noise that Adam scales to whole
            # steps, so only the query and value parts are comparable
            width = len(x) // 3
            x, y = torch.cat([x[:width], x[2 * width:]]), torch.cat([y[:width], y[2 * width:]])
        assert torch.allclose(x, y, atol=1e-5), name
    images = batches[3][0]
    assert torch.allclose(eager.predict(images), compiled.predict(images), atol=1e-4)


def test_a_failing_compile_falls_back_to_the_eager_step(make_learner, batches, monkeypatch):
    def broken_compile(module, **options):
        def fail(*args, **kwargs):
            raise RuntimeError("compiler unavailable")
        return fail
    monkeypatch.setattr(torch, "compile", broken_compile)
    eager, falling_back = make_learner(compile="off"), make_learner(compile="on")
    for images, labels in batches[:2]:
        expected = eager.update(images, labels)
        with pytest.warns(UserWarning, match="compiler unavailable") if labels is batches[0][1] else nullcontext():
            got = falling_back.update(images, labels)
        assert got == expected

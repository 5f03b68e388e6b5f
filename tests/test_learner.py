"""CLIPoodLearner on clipood-tiny: BMA of the real trajectory, exact resume, open classes, adapters."""
import copy
import io
import math
from contextlib import nullcontext

import open_clip
import pytest
import torch
import torch.nn.functional as F

from clipood_plugin import CLIP_MEAN, CLIP_STD, IMAGE_NORMS, IMAGENET_MEAN, IMAGENET_STD, ImageInput, InputAdapter
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
    assert not {"training_step", "image_encoder", "averager"} & set(state)
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


def test_the_openai_imagenet_template_set_is_open_clips_ensemble_of_openais_80_prompts(make_learner):
    """templates "openai_imagenet" (and ["openai_imagenet"], as the command line gives it): the text features of
    open_clip's own zero-shot classifier over its OPENAI_IMAGENET_TEMPLATES (callables, 80 of them)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    from clipood_plugin.settings import SettingError

    for templates in ("openai_imagenet", ["openai_imagenet"]):
        learner = make_learner(templates=templates, zero_shot=True)
        with torch.no_grad():
            expected = open_clip.build_zero_shot_classifier(
                learner.prompt_encoder.clip_model, open_clip.get_tokenizer("clipood-tiny"),
                [c.replace("_", " ") for c in CLASSES], OPENAI_IMAGENET_TEMPLATES).T
        assert len(OPENAI_IMAGENET_TEMPLATES) == 80 and len(learner.prompt_encoder.templates) == 80
        assert torch.allclose(learner.text_features, expected, atol=1e-6)
    with pytest.raises(SettingError, match="openai_imagenet"):
        make_learner(templates="openai_imagenet_80", zero_shot=True)


def test_no_averaging_and_no_margin_is_plain_finetuning(make_learner, batches):
    learner = make_learner(margin=0.0, averaging="none")
    for images, labels in batches[:2]:
        learner.update(images, labels)
    images = batches[3][0]
    assert torch.equal(learner.predict(images), learner.predict(images, averaged=False))


def test_input_adapter_maps_to_the_models_input_exactly():
    raw = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    imagenet = (raw - torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    clip = (raw - torch.tensor(CLIP_MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD, dtype=torch.float64).view(1, 3, 1, 1)
    openai = IMAGE_NORMS["openai"]
    adapter = InputAdapter(openai.at(32), IMAGENET_MEAN, IMAGENET_STD).double()
    assert torch.allclose(adapter(imagenet), clip, atol=1e-6)
    resized = InputAdapter(openai.at(16), IMAGENET_MEAN, IMAGENET_STD).double()(imagenet)
    assert resized.shape[-2:] == (16, 16)
    assert torch.allclose(resized, F.interpolate(clip, size=(16, 16), mode="bicubic", antialias=True), atol=1e-6)
    # another model's input: mean = std = 0.5 (x * 2 - 1), bilinear, a size that is not square
    other = ImageInput((12, 20), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear", "squash")
    mapped = InputAdapter(other, IMAGENET_MEAN, IMAGENET_STD).double()(imagenet)
    assert torch.allclose(mapped, F.interpolate(raw * 2 - 1, size=(12, 20), mode="bilinear", antialias=True), atol=1e-6)
    gray = torch.rand(2, 1, 8, 8)
    assert torch.equal(InputAdapter(openai.at(8))(gray), gray.expand(-1, 3, -1, -1))


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


def assert_same(got, expected, where="state"):
    """Deep equality of two state_dict()s: every tensor bit for bit, every other value equal."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == expected.dtype and torch.equal(got, expected), where
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), where
        for key in expected:
            assert_same(got[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert type(got) is type(expected) and len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert got == expected, where


def _corrupt(edit):
    def apply(state):
        state = copy.deepcopy(state)
        edit(state)
        return state
    return apply


def _set(path, value):
    def edit(state):
        *parents, last = path
        for key in parents:
            state = state[key]
        state[last] = value(state[last]) if callable(value) else value
    return edit


BAD_CHECKPOINTS = {
    "live weights of another shape": _corrupt(_set(("image_encoder", "ln_post.bias"), lambda t: t[:-1])),
    "not a dict": lambda state: [state],
    "old format": _corrupt(_set(("format",), 1)),
    "no scheduler": _corrupt(lambda state: state.pop("scheduler")),
    "other model": _corrupt(_set(("config", "model_name"), "ViT-B-16")),
    "step beyond the horizon": _corrupt(_set(("step",), 99)),
    "text features of another width": _corrupt(_set(("text_features",), lambda t: t[:, :-1])),
    "inference encoder lacks a tensor": _corrupt(lambda state: state["inference_encoder"].pop("proj")),
    "live weights in fp16": _corrupt(_set(("image_encoder", "proj"), lambda t: t.half())),
    "optimizer moments of another shape": _corrupt(_set(("training_step", "optimizer", "state", 0, "exp_avg"),
                                                         lambda t: t.flatten()[:-1])),
    "skip count missing": _corrupt(lambda state: state["training_step"].pop("skipped")),
    "other BMA beta": _corrupt(_set(("averager", "beta"), 0.1)),
    "schedule of another step": _corrupt(_set(("scheduler", "last_epoch"), 1)),
    "other lr": _corrupt(_set(("config", "lr"), 1e-2)),
    "other weight decay": _corrupt(_set(("config", "weight_decay"), 0.01)),
}


def test_a_failed_load_changes_nothing(make_learner, batches):
    source = make_learner()
    for images, labels in batches[:3]:
        source.update(images, labels)
    good = roundtrip(source.state_dict())
    target = make_learner(seed=5)
    target.update(*batches[0])
    before = copy.deepcopy(target.state_dict())
    for name, corrupt in BAD_CHECKPOINTS.items():
        with pytest.raises(ValueError):
            target.load_state_dict(corrupt(good))
        assert_same(target.state_dict(), before, name)
    assert target.update(*batches[1])["skipped"] == 0  # still trains: not taken for an inference-only checkpoint
    target.load_state_dict(good)
    assert_same(target.state_dict(), source.state_dict())


def test_other_lr_or_weight_decay_resumes_only_when_asked_and_then_follows_the_new_schedule(make_learner, batches):
    source = make_learner()
    for images, labels in batches[:2]:
        source.update(images, labels)
    state = roundtrip(source.state_dict())
    target = make_learner(lr=5e-4, weight_decay=0.05)
    with pytest.raises(ValueError, match=r"lr 0.001 -> 0.0005, weight_decay 0.1 -> 0.05"):
        target.load_state_dict(state)
    with pytest.warns(UserWarning, match=r"lr=0.0005 \(the checkpoint was trained with 0.001\)"):
        target.load_state_dict(state, allow_hparam_change=True)
    for t in (2, 3):
        assert target.update(*batches[t])["lr"] == pytest.approx(5e-4 * (1 + math.cos(math.pi * t / 6)) / 2)
    assert target.optimizer.param_groups[0]["weight_decay"] == 0.05


def test_a_resume_needs_the_same_number_of_classes_and_an_inference_checkpoint_brings_its_own(make_learner,
                                                                                               batches):
    source = make_learner(class_names=CLASSES[:3])
    source.update(batches[0][0], batches[0][1] % 3)
    target = make_learner()
    with pytest.raises(ValueError, match="trained on 3 classes and this learner on 4"):
        target.load_state_dict(roundtrip(source.state_dict()))
    assert target.class_names == CLASSES
    target.load_state_dict(roundtrip(source.state_dict(include_training_state=False)))  # e.g. Dassl's new classes:
    assert target.class_names == CLASSES[:3]  # loaded, then set_class_names(new ones)
    assert torch.equal(target.predict(batches[1][0]), source.predict(batches[1][0]))


BAD_CLASS_NAMES = [
    (["dog", "golden_retriever", "golden retriever"], "'golden_retriever' = 'golden retriever'"),
    (["cat", "dog", "cat"], "'cat' = 'cat'"),
    (["Dog", "dog  "], "'Dog' = 'dog  '"),  # CLIP's tokenizer lowercases and collapses spaces
    (["dog", ""], r"positions \[1\] are empty"),
    (["dog", "__"], r"positions \[1\] are empty"),
    (["dog", 3], r"list of strings, got \['dog', 3\]"),
    ("abc", "not one string .*got the string 'abc'"),
]


def test_class_names_that_cannot_be_told_apart_are_an_error(make_learner):
    learner = make_learner(zero_shot=True)
    features = learner.text_features.clone()
    for names, message in BAD_CLASS_NAMES:
        with pytest.raises(ValueError, match=message):
            learner.set_class_names(names)
        assert learner.class_names == CLASSES and torch.equal(learner.text_features, features)


def test_a_bare_string_is_not_a_list_of_class_names(make_learner):
    with pytest.raises(ValueError, match="not one string .*got the string 'cat'"):
        make_learner(class_names="cat", zero_shot=True)


BAD_IMAGES = [
    (torch.zeros(6, 3, 32, 32, dtype=torch.int64), r"got torch.int64, .*images.to\(torch.uint8\)"),
    (torch.zeros(6, 3, 32, 32, dtype=torch.float64), r"got torch.float64, .*images.float\(\)"),
    (torch.zeros(0, 3, 32, 32), "at least one image"),
    (torch.zeros(6, 32, 32), r"got shape \[6, 32, 32\]"),
    (torch.zeros(6, 4, 32, 32), r"got shape \[6, 4, 32, 32\]"),
    (torch.zeros(6, 3, 32, 32).tolist(), "got a list"),
]


def test_images_of_the_wrong_kind_say_what_is_expected(make_learner):
    learner = make_learner()
    expected = r"images must be a tensor \[batch, channels \(1-3\), height, width\] of uint8 pixels"
    labels = torch.zeros(6, dtype=torch.long)
    for images, message in BAD_IMAGES:
        for call in (lambda: learner.update(images, labels), lambda: learner.predict(images)):
            with pytest.raises(ValueError, match=expected) as error:
                call()
            assert error.match(message)
    assert learner.step == 0
    half = torch.randn(2, 3, 32, 32).half()  # half-precision batches are taken (widened exactly)
    assert torch.equal(learner.predict(half), learner.predict(half.float()))


def test_labels_must_be_one_class_index_per_image(make_learner, batches):
    learner = make_learner()
    images = batches[0][0]
    for labels in (torch.zeros(6), torch.zeros(5, dtype=torch.long), torch.zeros(6, 1, dtype=torch.long)):
        with pytest.raises(ValueError, match=r"labels must be an integer tensor \[6\]"):
            learner.update(images, labels)
    learner.update(images, torch.zeros(6, dtype=torch.int32))  # any integer type


def test_compile_auto_is_cuda_graphs_on_one_cuda_device_and_the_default_mode_under_ddp():
    """The CUDA default chosen from the H200 measurements (docs/benchmarks.md): CUDA graphs were the fastest mode
    at batch 36 and 256; with several ranks (not measured) torch.compile's default mode; nothing on a CPU."""
    from clipood_plugin.learner import _compile_mode
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert _compile_mode("auto", cuda, 1) == "reduce-overhead"
    assert _compile_mode("auto", cuda, 2) == "default"
    assert _compile_mode("auto", cpu, 1) is None
    assert _compile_mode("on", cuda, 1) == "default" and _compile_mode("off", cuda, 1) is None

"""Contract tests of the DomainBed adapter that run without DomainBed (CI).

DomainBed's Algorithm base is an nn.Module whose constructor takes (input_shape, num_classes,
num_domains, hparams); ``AlgorithmBase`` below is that contract and nothing more. The same classes are
run on the real DomainBed in test_domainbed_integration.py.
"""
import io
import os
import subprocess
import sys
import types
import warnings
import weakref

import pytest
import torch

from clipood_plugin import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, CLIPoodLearner
from domainbed_adapter import algorithms as adapter_algorithms
from domainbed_adapter.algorithms import build_algorithm_classes, resolve_horizon
from domainbed_adapter.hparams import default_clipood_hparams
from domainbed_adapter.registration import patch_algorithms, patch_hparams_registry, register_loaded
from domainbed_adapter.run_context import TrainRun, current_train_run

pytestmark = pytest.mark.filterwarnings("ignore:CLIP algorithm built outside")


class AlgorithmBase(torch.nn.Module):
    """DomainBed's Algorithm constructor contract (CI has no DomainBed)."""

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__()
        self.hparams = hparams


CLASSES = build_algorithm_classes(AlgorithmBase)


def build(name="CLIPood", steps=4, input_shape=(3, 224, 224), num_classes=2, seed=0, **overrides):
    hparams = {**default_clipood_hparams(name, "Debug224"), "steps": steps,
               "class_names": [f"thing {i}" for i in range(num_classes)], **overrides}
    torch.manual_seed(seed)
    return CLASSES[name](input_shape, num_classes, 2, hparams)


def minibatches(labels_per_env=((0, 1, 0), (1, 0, 1)), size=224, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(len(labels), 3, size, size, generator=generator), torch.tensor(labels))
            for labels in labels_per_env]


def test_package_imports_without_domainbed_or_open_clip_and_core_never_imports_it():
    code = ("import sys, domainbed_adapter, domainbed_adapter.algorithms, domainbed_adapter.registration, "
            "domainbed_adapter.checkpoint, domainbed_adapter.evaluate_open, domainbed_adapter.final_model_table, "
            "domainbed_adapter.summary, domainbed_adapter.train\n"
            "assert not any(m == 'domainbed' or m.startswith(('domainbed.', 'open_clip')) for m in sys.modules), "
            "sorted(m for m in sys.modules if m.startswith(('domainbed.', 'open_clip')))\n"
            "import clipood_plugin\n"
            "assert not any(m.startswith('domainbed') for m in sys.modules if m != 'domainbed_adapter' "
            "and not m.startswith('domainbed_adapter.')), 'the core imported DomainBed'")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_update_returns_floats_and_predict_gives_logits_on_the_input_device():
    algorithm = build()
    stats = algorithm.update(minibatches())
    assert stats and all(type(value) is float for value in stats.values()) and "loss" in stats
    x = minibatches()[0][0]
    logits = algorithm.predict(x)
    assert logits.shape == (3, 2) and logits.device == x.device


def test_one_update_more_than_the_horizon_raises():
    algorithm = build(steps=2)
    algorithm.update(minibatches())
    algorithm.update(minibatches())
    with pytest.raises(RuntimeError, match="--steps"):
        algorithm.update(minibatches())


def test_clip_erm_predicts_with_its_live_weights_and_clipood_with_the_average():
    erm, clipood = build("CLIPERM"), build("CLIPood")
    for algorithm in (erm, clipood):
        algorithm.update(minibatches())
    x = minibatches()[0][0]
    assert torch.equal(erm.predict(x), erm.learner.predict(x, averaged=False))
    assert not torch.allclose(clipood.predict(x), clipood.learner.predict(x, averaged=False))
    assert erm.learner.config["margin"] == 0 and clipood.learner.config["margin"] == 0.3


@pytest.mark.parametrize("input_shape,to_domainbed,clip_transforms", [
    ((3, 224, 224), lambda clip01: (clip01 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1),
     "domainbed"),
    # the authors' pipeline normalizes with CLIP's own mean/std
    ((3, 224, 224), lambda clip01: (clip01 - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1),
     "clipood"),
    ((1, 28, 28), lambda clip01: clip01[:1], "domainbed"),  # MNIST variants: gray [0, 1], no normalization
])
def test_domainbed_images_reach_clip_exactly_normalized(input_shape, to_domainbed, clip_transforms):
    algorithm = build("CLIPZeroShot", input_shape=input_shape, seed=3, clip_transforms=clip_transforms)
    torch.manual_seed(3)  # same weights: the learner draws them in the same order
    reference = CLIPoodLearner(model_name="clipood-tiny", pretrained=None, class_names=["thing 0", "thing 1"],
                               zero_shot=True)
    size = reference.image_size
    pixels = torch.rand(2, 1, size, size).expand(-1, 3, -1, -1)  # gray, so the 1-channel case sees the same
    clip_normalized = (pixels - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
    domainbed_images = torch.stack([to_domainbed(image) for image in pixels])
    torch.testing.assert_close(algorithm.predict(domainbed_images), reference.predict(clip_normalized),
                               rtol=1e-4, atol=1e-4)


def test_in_the_wild_trains_against_the_base_class_names_only_and_predicts_among_all():
    names = [f"thing {i}" for i in range(4)]
    in_the_wild = build(open_class_ratio=0.5, num_classes=4)
    assert in_the_wild.num_base_classes == 2 and in_the_wild.class_names == names
    assert in_the_wild.learner.class_names == names[:2]  # the new names are unknown until test time
    batch = minibatches(((0, 1, 0), (1, 1, 0)))
    # reference: the same weights trained on a 2-class problem; all four names would add negatives
    base_only, all_names = build(num_classes=2), build(num_classes=4)
    loss = in_the_wild.update(batch)["loss"]
    assert loss == pytest.approx(base_only.update(batch)["loss"], rel=1e-6)
    assert loss != pytest.approx(all_names.update(batch)["loss"], rel=1e-3)
    x = batch[0][0]
    assert in_the_wild.predict(x).shape == (3, 4) and in_the_wild.learner.class_names == names
    in_the_wild.update(batch)
    assert in_the_wild.learner.class_names == names[:2]
    assert in_the_wild.state_dict()["clipood_learner"]["class_names"] == names  # model.pkl predicts among all
    with pytest.raises(ValueError, match="new classes"):
        in_the_wild.update(minibatches(((0, 2, 0), (1, 1, 0))))


@pytest.fixture(scope="module")
def tiny_weights_file(tmp_path_factory):
    """Named (reproducible) CLIP weights without network: the tiny model saved to a file."""
    from clipood_plugin.backbone import load_clip
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("weights") / "clipood-tiny.pt"
    torch.save(load_clip("clipood-tiny", None)[0].state_dict(), path)
    return str(path)


@pytest.mark.parametrize("name,named_weights", [("CLIPood", False), ("CLIPZeroShot", False), ("CLIPZeroShot", True)])
def test_model_pkl_state_reloads_to_the_same_logits_and_holds_nothing_dead(name, named_weights, tiny_weights_file):
    weights = {"clip_pretrained": tiny_weights_file} if named_weights else {}
    trained = build(name, steps=2, **weights)
    if name == "CLIPood":
        trained.update(minibatches())
        trained.update(minibatches())
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    learner_state = state["clipood_learner"]
    # no optimizer, no live weights, no averager bookkeeping, no text tower; no encoder when the named
    # pretrained weights already are the zero-shot encoder
    expected = {"format", "config", "class_names", "text_features", "step"} | (set() if named_weights else {"inference_encoder"})
    assert set(learner_state) == expected
    if not named_weights:
        assert set(learner_state["inference_encoder"]) == set(trained.learner.image_encoder.state_dict())
    fresh = build(name, steps=2, seed=123, class_names=["other 0", "other 1"], **weights)
    x = minibatches()[0][0]
    assert not torch.allclose(fresh.predict(x), trained.predict(x))  # other classes, and other weights unless named
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.predict(x), trained.predict(x), rtol=0, atol=0)
    assert fresh.class_names == ["thing 0", "thing 1"]


def test_loading_a_partial_bma_warns():
    partial = build(steps=3)
    partial.update(minibatches())
    with pytest.warns(UserWarning, match="after 1 of the 3 steps"):
        build(steps=3).load_state_dict(partial.state_dict())


def test_a_run_that_ends_before_its_horizon_is_reported(capsys):
    algorithm = build(steps=3)
    algorithm.update(minibatches())
    adapter_algorithms._report_incomplete_run(weakref.ref(algorithm))
    assert "made 1 of the 3 optimizer steps" in capsys.readouterr().err


def test_horizon_comes_from_the_train_run_and_a_mismatch_is_an_error():
    run = TrainRun(dataset_name="PACS", n_steps=7, dataset=None)
    assert resolve_horizon(None, run) == 7
    assert resolve_horizon(7, run) == 7
    with pytest.raises(ValueError, match="train.py will run 7 steps"):
        resolve_horizon(5, run)
    assert resolve_horizon(5, None) == 5


def test_the_horizon_used_is_recorded_in_the_hparams(monkeypatch):
    monkeypatch.setattr(adapter_algorithms, "current_train_run",
                        lambda: TrainRun(dataset_name="Debug224", n_steps=6, dataset=None))
    algorithm = build(steps=None)
    assert algorithm.total_steps == 6 and algorithm.hparams["steps"] == 6


def _train_main(dataset_name, steps, dataset):
    """A ``__main__`` with the names train.py defines before it builds the algorithm."""
    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name="domainbed.scripts.train")
    main.args = types.SimpleNamespace(dataset=dataset_name, steps=steps)
    main.dataset = dataset
    return main


@pytest.mark.parametrize("steps,expected", [(None, 5001), (10000, 10000)])
def test_train_run_is_read_from_train_py_namespace(monkeypatch, steps, expected):
    loaded = types.SimpleNamespace(N_STEPS=5001, datasets=[])
    monkeypatch.setitem(sys.modules, "__main__", _train_main("PACS", steps, loaded))
    assert current_train_run() == TrainRun(dataset_name="PACS", n_steps=expected, dataset=loaded)


def test_a_train_script_without_the_expected_names_warns(monkeypatch):
    main = _train_main("PACS", None, None)
    del main.args
    monkeypatch.setitem(sys.modules, "__main__", main)
    with pytest.warns(UserWarning, match="steps"):
        assert current_train_run() is None


def test_no_train_run_outside_train_py():
    assert current_train_run() is None  # pytest's __main__


def test_registration_patches_only_loaded_modules_and_is_idempotent(monkeypatch):
    algorithms_module = types.ModuleType("domainbed.algorithms")
    algorithms_module.Algorithm, algorithms_module.ALGORITHMS = AlgorithmBase, ["ERM"]
    registry = types.ModuleType("domainbed.hparams_registry")
    registry._hparams = lambda algorithm, dataset, seed: {"lr": (1e-3, 2e-3), "batch_size": (32, 16)}
    monkeypatch.delitem(sys.modules, "domainbed.algorithms", raising=False)
    monkeypatch.setitem(sys.modules, "domainbed.hparams_registry", registry)
    register_loaded()  # only the registry is "imported"
    assert algorithms_module.ALGORITHMS == ["ERM"]
    wrapped = registry._hparams
    assert registry._hparams("CLIPood", "PACS", 0)["lr"][0] == 5e-6
    assert registry._hparams("ERM", "PACS", 0) == {"lr": (1e-3, 2e-3), "batch_size": (32, 16)}
    monkeypatch.setitem(sys.modules, "domainbed.algorithms", algorithms_module)
    register_loaded()
    register_loaded()
    assert registry._hparams is wrapped
    assert algorithms_module.ALGORITHMS == ["ERM", "CLIPood", "CLIPERM", "CLIPZeroShot"]
    assert issubclass(algorithms_module.CLIPood, AlgorithmBase) and algorithms_module.CLIPood is CLASSES["CLIPood"]
    patch_algorithms(algorithms_module)
    patch_hparams_registry(registry)
    assert algorithms_module.ALGORITHMS.count("CLIPood") == 1 and registry._hparams is wrapped


def test_missing_hparams_name_the_fix():
    with pytest.raises(KeyError, match="default_hparams"):
        CLASSES["CLIPood"]((3, 224, 224), 2, 2, {"clip_model": "clipood-tiny"})


def test_a_random_init_model_at_a_fine_tuning_rate_warns_as_clipood_train_does():
    """Debug224's defaults: clipood-tiny with clip_pretrained null, at the paper's lr 5e-6."""
    with pytest.warns(UserWarning, match=r"CLIPood: warning: the hparam clip_pretrained null trains from random "
                                         r"weights, which a learning rate of 5e-06 .* e\.g\. --hparams '\{\"lr\": "):
        build(lr=5e-6)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*random weights")
        build(lr=2e-3)
        build("CLIPZeroShot")

"""`clipood export`: a trained model as an open_clip checkpoint that plain open_clip loads and that predicts
what the learner predicted (zero-shot logits of the reload, computed by open_clip, against predict()).

The formats of the three front ends: the learner's state (`clipood train`'s model.pt), DomainBed's
model.pkl and Dassl's checkpoints, the latter two written by the real frameworks."""
import json

import open_clip
import pytest
import torch

from clipood_plugin import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, CLIPoodLearner
from clipood_plugin.backbone import resolve_model_name
from clipood_plugin.cli import main
from pretrained_cache import random_weights, write_openai_archive, zero_shot_logits
from test_dassl_integration import dassl_train, data_root  # noqa: F401 (data_root: a fixture)
from test_domainbed_integration import train as domainbed_train

CLASS_NAMES = ["dog", "cat", "golden_retriever"]
TEMPLATES = ("a photo of a {}.", "a sketch of a {}.")


def normalized(pixels, mean, std):
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def pixels(size, count=4):
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(7))


def reload_logits(out, images):
    """Plain open_clip, from the exported file and what the JSON beside it says (model, classes, prompts)."""
    metadata = json.loads(out.with_suffix(".json").read_text())
    name = metadata["open_clip_model"]
    model, _, _ = open_clip.create_model_and_transforms(name, pretrained=str(out))
    class_names = [c.replace("_", " ") for c in metadata["class_names"]]
    return zero_shot_logits(model.eval(), name, class_names, metadata["training"]["templates"], images)


def learner_from_state(state):
    """The predictor a checkpoint holds, rebuilt as its config says."""
    learner = CLIPoodLearner(**state["config"], class_names=state["class_names"], device="cpu")
    learner.load_state_dict(state)
    return learner


def train(learner, steps, size):
    generator = torch.Generator().manual_seed(3)
    for _ in range(steps):
        images = normalized(torch.rand(2, 3, size, size, generator=generator), CLIP_MEAN, CLIP_STD)
        learner.update(images, torch.randint(0, learner.num_classes, (2,), generator=generator))


def export(checkpoint, out, *more, capsys=None):
    code = main(["export", str(checkpoint), str(out), *more])
    return code, (capsys.readouterr() if capsys else None)


@pytest.fixture(scope="module")
def tiny_archive(tmp_path_factory):
    """clipood-tiny weights in OpenAI's TorchScript layout: they load as clipood-tiny-quickgelu."""
    model = open_clip.create_model(resolve_model_name("clipood-tiny-quickgelu"))  # resolving registers it
    model.load_state_dict(random_weights("clipood-tiny-quickgelu", seed=12))
    return write_openai_archive(tmp_path_factory.mktemp("weights") / "openai_tiny.pt", model)


@pytest.fixture(scope="module")
def tiny_run(tiny_weights, tmp_path_factory):
    """A trained tiny learner (logit scale set by hand) and its model.pt."""
    torch.manual_seed(0)
    learner = CLIPoodLearner(model_name="clipood-tiny", pretrained=str(tiny_weights), class_names=CLASS_NAMES,
                             templates=TEMPLATES, total_steps=4, lr=1e-2, beta=0.5, logit_scale=30.0, device="cpu")
    train(learner, 4, 32)
    path = tmp_path_factory.mktemp("run") / "model.pt"
    torch.save(learner.state_dict(include_training_state=False), path)
    return learner, path


def test_an_openai_tagged_run_exports_to_open_clips_quickgelu_model(openai_hub_cache, tmp_path, capsys):
    learner = CLIPoodLearner(model_name="ViT-B/32", pretrained="openai", class_names=CLASS_NAMES,
                             templates=TEMPLATES, total_steps=1, lr=1e-4, device="cpu")
    train(learner, 1, 224)  # one step: the BMA of theta_0 and theta_1 is neither
    torch.save(learner.state_dict(include_training_state=False), tmp_path / "model.pt")
    code, printed = export(tmp_path / "model.pt", tmp_path / "exported.pt", capsys=capsys)
    assert code == 0 and "open_clip model: ViT-B-32-quickgelu" in printed.out
    images = normalized(pixels(224, 2), CLIP_MEAN, CLIP_STD)
    expected = learner.predict(images)
    assert (expected - learner.predict(images, averaged=False)).abs().max() > 1e-3  # the BMA is not the live model
    torch.testing.assert_close(reload_logits(tmp_path / "exported.pt", images), expected,
                               rtol=0, atol=1e-4)
    metadata = json.loads((tmp_path / "exported.json").read_text())
    assert metadata["source_checkpoint"] == str(tmp_path / "model.pt") and metadata["pretrained"] == "openai"
    assert metadata["training"]["lr"] == 1e-4 and metadata["training"]["model_name"] == "ViT-B-32-quickgelu"


def test_the_export_holds_the_averaged_model_and_the_learners_logit_scale(tiny_run, tmp_path):
    learner, model_pt = tiny_run
    assert export(model_pt, tmp_path / "exported.pt")[0] == 0
    images = normalized(pixels(32), CLIP_MEAN, CLIP_STD)
    torch.testing.assert_close(reload_logits(tmp_path / "exported.pt", images),
                               learner.predict(images), rtol=0, atol=1e-5)
    exported = torch.load(tmp_path / "exported.pt", weights_only=True)
    assert exported["logit_scale"].exp().item() == pytest.approx(30.0)
    pretrained = torch.load(learner.config["pretrained"], weights_only=True)
    assert all(torch.equal(exported[key], value) for key, value in pretrained.items()
               if not key.startswith("visual.") and key != "logit_scale")  # the text tower, unchanged


def test_a_second_stage_continues_from_the_exported_model(tiny_run, tmp_path):
    learner, model_pt = tiny_run
    export(model_pt, tmp_path / "stage1.pt")
    with pytest.raises(ValueError, match="exported for open_clip model 'clipood-tiny'"):
        CLIPoodLearner(model_name="RN50", pretrained=str(tmp_path / "stage1.pt"), class_names=CLASS_NAMES,
                       total_steps=1, device="cpu")
    second = CLIPoodLearner(model_name="clipood-tiny", pretrained=str(tmp_path / "stage1.pt"),
                            class_names=CLASS_NAMES, templates=TEMPLATES, total_steps=2, lr=1e-2, device="cpu")
    for key, value in learner.inference_encoder.state_dict().items():
        assert torch.equal(second.image_encoder.state_dict()[key], value), key
    torch.testing.assert_close(second.text_features, learner.text_features)
    assert second.logit_scale == pytest.approx(learner.logit_scale)  # the first stage's, carried by the export
    train(second, 2, 32)
    torch.save(second.state_dict(), tmp_path / "stage2_model.pt")  # with training state: still the BMA exports
    assert export(tmp_path / "stage2_model.pt", tmp_path / "stage2.pt")[0] == 0
    images = normalized(pixels(32), CLIP_MEAN, CLIP_STD)
    torch.testing.assert_close(reload_logits(tmp_path / "stage2.pt", images), second.predict(images),
                               rtol=0, atol=1e-5)


def test_what_cannot_be_exported_is_one_line_and_exit_code_2(tiny_run, tiny_weights, tiny_archive, tmp_path,
                                                            capsys):
    _, model_pt = tiny_run
    state = torch.load(model_pt, weights_only=True)
    diverged = dict(state["inference_encoder"], proj=torch.full_like(state["inference_encoder"]["proj"], float("nan")))
    torch.save({**state, "inference_encoder": diverged}, tmp_path / "diverged.pt")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    torch.save({"model_dict": {"network.0.weight": torch.zeros(1)}}, tmp_path / "erm_model.pkl")
    torch.save({**state, "config": {**state["config"], "zero_shot": True}}, tmp_path / "zero_shot.pt")
    torch.save({**state, "config": {**state["config"], "pretrained": None}}, tmp_path / "random_init.pt")
    torch.save({**state, "config": {**state["config"], "head": "linear"}}, tmp_path / "linear_head.pt")
    torch.save({**state, "config": {**state["config"], "pretrained": str(tmp_path / "gone.pt")}},
               tmp_path / "moved_weights.pt")
    # trained before the architecture followed the weights: OpenAI-style weights in the GELU model
    torch.save({**state, "config": {**state["config"], "pretrained": str(tiny_archive)}}, tmp_path / "gelu_run.pt")
    other_weights = tmp_path / "other.pt"
    torch.save(random_weights("clipood-tiny", seed=99), other_weights)
    out = tmp_path / "out.pt"
    cases = [(["missing.pt"], out, "no checkpoint at"), (["notes.txt"], out, "not a readable checkpoint"),
             (["erm_model.pkl"], out, "holds no CLIPood learner"), (["zero_shot.pt"], out, "zero-shot model"),
             (["random_init.pt"], out, "random init"), (["linear_head.pt"], out, "linear head"), (["moved_weights.pt"], out, "--pretrained FILE"),
             (["diverged.pt"], out, "non-finite weights"), (["gelu_run.pt"], out, "predates QuickGELU"),
             ([model_pt, "--pretrained", other_weights], out, "not the weights the run started from"),
             ([model_pt], model_pt, "an input of the export"), ([model_pt], tiny_weights, "an input of the export"),
             ([model_pt], tmp_path / "out.json", "overwritten by its own metadata")]
    for args, out_path, message in cases:
        code, printed = export(tmp_path / args[0], out_path, *map(str, args[1:]), capsys=capsys)
        assert code == 2 and message in printed.err and printed.err.count("\n") == 1, (args, printed.err)
    assert not out.exists()
    # the weights found elsewhere: the run's own, so the export goes through
    assert export(tmp_path / "moved_weights.pt", out, "--pretrained", str(tiny_weights))[0] == 0


# ----------------------------------------------------------------------------- framework checkpoints
@pytest.mark.needs("domainbed", "wilds")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_domainbed_model_pkl_exports_with_its_recorded_architecture(tiny_archive, tmp_path):
    from domainbed_adapter import load_algorithm

    domainbed_train(tmp_path / "run", "--algorithm", "CLIPood", "--steps", "3", "--hparams",
                    json.dumps({"clip_pretrained": str(tiny_archive), "prompt_template": list(TEMPLATES)}))
    assert export(tmp_path / "run" / "model.pkl", tmp_path / "exported.pt")[0] == 0
    algorithm, saved = load_algorithm(str(tmp_path / "run" / "model.pkl"))  # the algorithm rebuilt from model.pkl
    assert saved["model_dict"]["clipood_learner"]["config"]["model_name"] == "clipood-tiny-quickgelu"
    raw = pixels(32)  # the same pictures, in CLIP's normalization and in DomainBed's
    torch.testing.assert_close(reload_logits(tmp_path / "exported.pt", normalized(raw, CLIP_MEAN, CLIP_STD)),
                               algorithm.predict(normalized(raw, IMAGENET_MEAN, IMAGENET_STD)), rtol=0, atol=1e-4)


@pytest.mark.needs("dassl_checkout", "wilds")
def test_a_dassl_checkpoint_exports_with_its_recorded_architecture(data_root, tiny_archive, tmp_path):
    dassl_train(data_root, tmp_path / "run", "vit_b16_dg.yaml", "OPTIM.MAX_EPOCH", "1",
                "TRAINER.CLIPOOD.PRETRAINED", str(tiny_archive))
    checkpoint = tmp_path / "run" / "clipood" / "model.pth.tar-1"
    assert export(checkpoint, tmp_path / "exported.pt")[0] == 0
    state = torch.load(checkpoint, weights_only=True)["state_dict"]["learner"]
    assert state["config"]["model_name"] == "clipood-tiny-quickgelu"
    images = normalized(pixels(32), CLIP_MEAN, CLIP_STD)
    torch.testing.assert_close(reload_logits(tmp_path / "exported.pt", images),
                               learner_from_state(state).predict(images), rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------- what export writes
def contents(*paths):
    return {path: path.read_bytes() if path.is_file() else None for path in paths}


def test_export_overwrites_no_input_and_no_file_it_did_not_write(tiny_run, tmp_path, capsys):
    _, model_pt = tiny_run
    checkpoint_as_json = tmp_path / "ckpt.json"  # F-H13: the sidecar of OUT ckpt.pt is the input
    checkpoint_as_json.write_bytes(model_pt.read_bytes())
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(model_pt.read_bytes())
    (run / "results.json").write_text('{"accuracy": 1}')  # F-H14: OUT run/results puts its JSON here
    foreign = tmp_path / "theirs.pt"
    foreign.write_bytes(b"someone's weights")
    before = contents(checkpoint_as_json, run / "model.pt", run / "results.json", foreign)
    for checkpoint, out, extra, message in [
            (checkpoint_as_json, tmp_path / "ckpt.pt", [], "is an input of the export"),
            (checkpoint_as_json, tmp_path / "ckpt.pt", ["--overwrite"], "is an input of the export"),
            (run / "model.pt", run / "results", [], "not written by clipood export"),
            (model_pt, foreign, [], "not written by clipood export"),
            (run / "results.json", tmp_path / "x.pt", [], "not a readable checkpoint")]:
        code, printed = export(checkpoint, out, *extra, capsys=capsys)
        assert code == 2 and message in printed.err and printed.err.count("\n") == 1, printed.err
        assert "delete" not in printed.err  # its inputs are the user's files
    assert contents(*before) == before
    assert not (tmp_path / "ckpt.pt").exists() and not (run / "results").exists() and not (tmp_path / "x.pt").exists()
    # an earlier export of the same name is replaced without asking; a foreign file when asked
    assert export(model_pt, tmp_path / "again.pt")[0] == 0 and export(model_pt, tmp_path / "again.pt")[0] == 0
    assert export(model_pt, foreign, "--overwrite")[0] == 0
    assert json.loads(foreign.with_suffix(".json").read_text())["clipood_export"] == 1


def test_an_out_the_file_system_refuses_is_one_line_and_leaves_nothing_behind(tiny_run, tmp_path):
    from file_system import clipood, one_line_error, read_only_folder

    _, model_pt = tiny_run
    (tmp_path / "folder.pt").mkdir()  # F-M2
    (tmp_path / "a_file").write_text("")
    locked = read_only_folder(tmp_path / "locked")  # F-M1
    for out, kwargs in [(tmp_path / "folder.pt", {}), (tmp_path / "a_file" / "out.pt", {}),
                        (locked / "out.pt", {"permissions_hold": True})]:
        result = clipood("export", model_pt, out, **kwargs)
        assert one_line_error(result, "export") and str(out.parent) in result.stderr, result.stderr
    assert list((tmp_path / "folder.pt").iterdir()) == [] and list(locked.iterdir()) == []
    # F-M3: a full disk, where an earlier export of that name is kept whole
    disk = tmp_path / "disk"
    assert export(model_pt, disk / "model.pt")[0] == 0
    before = contents(disk / "model.pt", disk / "model.json")
    result = clipood("export", model_pt, disk / "model.pt", file_size_limit=4096)
    assert one_line_error(result, "export") and "cannot write" in result.stderr, result.stderr
    assert contents(*before) == before and sorted(p.name for p in disk.iterdir()) == ["model.json", "model.pt"]


def test_a_forged_or_partial_checkpoint_is_not_a_checkpoint_of_this_package(tiny_run, tmp_path, capsys):
    _, model_pt = tiny_run
    state = torch.load(model_pt, weights_only=True)
    encoder = dict(state["inference_encoder"])
    conv = encoder.pop("conv1.weight")
    forged = {"foreign_key.pt": {**state, "inference_encoder": {**encoder, "conv9.weight": conv}},  # F-M4
              "other_shape.pt": {**state, "inference_encoder": {**encoder, "conv1.weight": conv[:, :1]}},  # F-M5
              "config_only.pt": {"format": 2, "config": {"model_name": "clipood-tiny"}},  # F-M6
              "no_text_features.pt": {k: v for k, v in state.items() if k != "text_features"},
              "no_zero_shot.pt": {**state, "config": {k: v for k, v in state["config"].items() if k != "zero_shot"}}}
    for name, content in forged.items():
        torch.save(content, tmp_path / name)
        code, printed = export(tmp_path / name, tmp_path / "out.pt", capsys=capsys)
        assert code == 2 and "not a checkpoint of this package" in printed.err, (name, printed.err)
        assert printed.err.count("\n") == 1 and "delete" not in printed.err, (name, printed.err)
    assert not (tmp_path / "out.pt").exists()


def test_the_printed_reload_line_runs_as_printed_in_a_fresh_python(tiny_run, tmp_path, capsys):
    import subprocess
    import sys

    _, model_pt = tiny_run
    code, printed = export(model_pt, tmp_path / "exported.pt", capsys=capsys)
    line = next(line for line in printed.out.splitlines() if line.startswith("load it with: "))
    command = line.removeprefix("load it with: ") + "; print('loaded')"
    result = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})  # no PYTHONPATH: plain open_clip
    assert code == 0 and result.stdout.strip() == "loaded", result.stderr[-2000:]

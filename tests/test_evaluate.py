"""`clipood evaluate` and clipood_plugin.load_learner: a saved model of each kind measures, on a folder
dataset, the accuracy its run measured; other class names are matched to the folders by name."""
import json

import pytest
import torch

import clipood_plugin
from clipood_plugin import CLIPoodLearner
from clipood_plugin.cli import main
from clipood_plugin.data import ImageList, scan_domain_folders
from clipood_plugin.synthetic import make_demo_dataset
from test_dassl_integration import data_root  # noqa: F401 (a fixture)

CLASSES = ["circle", "square", "star", "triangle"]


def run(*argv):
    return main(list(map(str, argv)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("shapes"), images_per_class=6)


@pytest.fixture(scope="module")
def trained(data_dir, tiny_weights, tmp_path_factory):
    """A run stopped at step 2 (its checkpoint.pt kept aside), then finished at step 4 (model.pt)."""
    out = tmp_path_factory.mktemp("run")
    argv = ["train", "--data-dir", data_dir, "--test-domains", "sketch", "--output-dir", out, "--model",
            "clipood-tiny", "--pretrained", tiny_weights, "--lr", "1e-3", "--batch-size", 4, "--steps", 4,
            "--eval-every", 2, "--checkpoint-every", 2, "--workers", 0, "--holdout-fraction", 0]
    assert run(*argv, "--stop-after", 2) == 0
    stopped = out.parent / "step2.pt"
    stopped.write_bytes((out / "checkpoint.pt").read_bytes())
    assert run(*argv, "--resume") == 0
    return out, stopped, json.loads((out / "results.json").read_text())


def evaluated(model, data_dir, tmp_path, *more):
    output = tmp_path / "evaluation.json"
    assert run("evaluate", model, "--data-dir", data_dir, "--output", output, "--workers", 0, *more) == 0
    return json.loads(output.read_text())


def test_model_pt_and_a_checkpoint_measure_what_the_run_measured(trained, data_dir, tmp_path, capsys):
    out, stopped, results = trained
    final = evaluated(out / "model.pt", data_dir, tmp_path)
    assert final["accuracy"]["sketch"] == pytest.approx(results["accuracy"]["bma"]["sketch"])
    assert list(final["accuracy"]) == ["painting", "photo", "sketch"] and final["class_names"] == CLASSES and final["images"]["sketch"] == 24
    assert final["mean"] == pytest.approx(sum(final["accuracy"].values()) / 3)
    assert "sketch" in capsys.readouterr().out
    at_step_2 = evaluated(stopped, data_dir, tmp_path, "--domains", "sketch")
    history = {entry["step"]: entry for entry in results["history"]}
    assert list(at_step_2["accuracy"]) == ["sketch"]
    assert at_step_2["accuracy"]["sketch"] == pytest.approx(history[2]["bma"]["sketch"])


def test_an_export_measures_what_its_model_pt_measures(trained, data_dir, tmp_path):
    """WiSE-FT too: the export's theta_0 comes from the pretrained weights its JSON records."""
    out, _, _ = trained
    assert run("export", out / "model.pt", tmp_path / "exported.pt") == 0
    exported = evaluated(tmp_path / "exported.pt", data_dir, tmp_path, "--wise-ft", "0,0.5")
    saved = evaluated(out / "model.pt", data_dir, tmp_path, "--wise-ft", "0,0.5")
    assert (exported["accuracy"], exported["wise_ft"]) == (saved["accuracy"], saved["wise_ft"])


def test_wise_ft_runs_from_the_zero_shot_model_to_the_saved_one(trained, data_dir, tmp_path, capsys):
    """alpha 0 measures what the run measured zero-shot, alpha 1 what it measured for its BMA model
    (tests/test_wise_ft.py holds the interpolation itself to the equation)."""
    out, _, results = trained
    evaluation = evaluated(out / "model.pt", data_dir, tmp_path, "--wise-ft", "0,0.25,1")
    curve = {entry["alpha"]: entry for entry in evaluation["wise_ft"]}
    assert list(curve) == [0, 0.25, 1]
    for alpha, measured in ((0, "zero_shot"), (1, "bma")):
        assert curve[alpha]["accuracy"]["sketch"] == pytest.approx(results["accuracy"][measured]["sketch"])
    assert evaluation["accuracy"] == curve[1]["accuracy"] and evaluation["mean"] == curve[1]["mean"]
    assert all(entry["mean"] == pytest.approx(sum(entry["accuracy"].values()) / 3) for entry in curve.values())
    printed = capsys.readouterr().out.splitlines()
    table = printed[printed.index(next(line for line in printed if line.startswith("WiSE-FT"))) + 1:]
    assert table[0].split() == ["alpha", "painting", "photo", "sketch", "mean"]
    assert [line.split()[0] for line in table[1:4]] == ["0", "0.25", "1"]


def test_other_class_names_are_matched_to_the_folders_by_name(trained, data_dir, tmp_path, capsys):
    model = trained[0] / "model.pt"
    own = evaluated(model, data_dir, tmp_path)["accuracy"]
    reordered = evaluated(model, data_dir, tmp_path, "--class-names", ",".join(reversed(CLASSES)))
    assert reordered["accuracy"] == own and reordered["class_names"] == list(reversed(CLASSES))
    names_file = tmp_path / "names.txt"
    names_file.write_text("\n".join(["hexagon", *CLASSES, "ellipse"]) + "\n")
    more = evaluated(model, data_dir, tmp_path, "--class-names-file", names_file)
    assert more["class_names"] == ["hexagon", *CLASSES, "ellipse"]
    assert all(more["accuracy"][d] <= own[d] for d in own)  # two more wrong answers to choose from
    assert run("evaluate", model, "--data-dir", data_dir, "--class-names", "circle,square,star") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "['triangle']" in err and "--class-names" in err


def test_a_random_init_model_evaluates_on_its_own_classes_only(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run("train", "--data-dir", data_dir, "--test-domains", "sketch", "--output-dir", out, "--model",
               "clipood-tiny", "--pretrained", "none", "--lr", "1e-3", "--batch-size", 4, "--steps", 2,
               "--eval-every", 2, "--workers", 0) == 0
    accuracy = json.loads((out / "results.json").read_text())["accuracy"]["bma"]["sketch"]
    assert evaluated(out / "model.pt", data_dir, tmp_path, "--domains", "sketch")["accuracy"]["sketch"] == \
        pytest.approx(accuracy)
    assert run("evaluate", out / "model.pt", "--data-dir", data_dir, "--class-names", "a,circle,square,star,triangle") == 2
    assert "random init" in capsys.readouterr().err
    assert run("evaluate", out / "model.pt", "--data-dir", data_dir, "--wise-ft", "0,1") == 2  # no theta_0 saved
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "random init" in err and "WiSE-FT" in err


@pytest.mark.parametrize("problem, message", [
    ("no model", "no model file at"), ("bad domain", "unknown domain(s) ['cartoon']"),
    ("bad device", "--device gpu: not a device name"), ("bad batch", "--batch-size must be a whole number >= 1"),
    ("bad alpha", "--wise-ft must be a non-empty list of distinct finite numbers in [0, 1], got [0.0, 1.5]"),
    ("no alphas", "--wise-ft takes comma-separated numbers, e.g. 0,0.25,0.5,0.75,1; got '0,,1'"),
])
def test_bad_input_is_one_line_and_exit_2(trained, data_dir, tmp_path, capsys, problem, message):
    model, more = trained[0] / "model.pt", []
    if problem == "no model":
        model = tmp_path / "missing.pt"
    else:
        more = {"bad domain": ["--domains", "cartoon"], "bad device": ["--device", "gpu"],
                "bad batch": ["--batch-size", 0], "bad alpha": ["--wise-ft", "0,1.5"],
                "no alphas": ["--wise-ft", "0,,1"]}[problem]
    assert run("evaluate", model, "--data-dir", data_dir, *more) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_load_learner_predicts_as_the_run_measured(trained, data_dir):
    """The library way back from model.pt: the sketch accuracy computed here by hand is the run's."""
    out, _, results = trained
    learner = clipood_plugin.load_learner(out / "model.pt", device="cpu")
    assert learner.class_names == CLASSES
    assert accuracy_by_hand(learner, data_dir, "sketch") == pytest.approx(results["accuracy"]["bma"]["sketch"])


def accuracy_by_hand(learner, data_dir, domain):
    samples = scan_domain_folders(data_dir).samples[domain]
    images, labels, _ = ImageList.collate([ImageList(samples, learner.preprocess_val)[i] for i in range(len(samples))])
    with torch.no_grad():
        return 100.0 * (learner.predict(images).argmax(1) == labels).sum().item() / len(samples)


def test_a_domainbed_zero_shot_model_pkl_is_its_pretrained_model(data_dir, tiny_weights, tmp_path):
    """DomainBed's CLIPZeroShot saves no encoder when its weights are named (they are the pretrained ones)."""
    from test_domainbed_contract import build

    algorithm = build("CLIPZeroShot", num_classes=4, class_names=CLASSES, clip_pretrained=str(tiny_weights))
    torch.save({"args": {}, "model_dict": algorithm.state_dict()}, tmp_path / "model.pkl")
    zero_shot = CLIPoodLearner(model_name="clipood-tiny", pretrained=str(tiny_weights), class_names=CLASSES,
                               templates=algorithm.learner.config["templates"], zero_shot=True, device="cpu")
    expected = accuracy_by_hand(zero_shot, data_dir, "photo")
    assert evaluated(tmp_path / "model.pkl", data_dir, tmp_path, "--domains", "photo")["accuracy"]["photo"] == \
        pytest.approx(expected)


@pytest.mark.needs("dassl_checkout", "wilds")
def test_a_dassl_checkpoint_measures_what_its_learner_predicts(data_root, tmp_path):  # noqa: F811 (a fixture)
    """Dassl's PACS layout holds ROOT/<domain>/<class>/ folders under images/: evaluate reads them as they are."""
    from test_dassl_integration import dassl_train

    dassl_train(data_root, tmp_path / "run", "vit_b16_dg.yaml", "OPTIM.MAX_EPOCH", "1",
                "TRAINER.CLIPOOD.PRETRAINED", str(data_root / "tiny.pt"))
    checkpoint = tmp_path / "run" / "clipood" / "model.pth.tar-1"
    state = torch.load(checkpoint, weights_only=True)["state_dict"]["learner"]
    learner = CLIPoodLearner(**state["config"], class_names=state["class_names"], device="cpu")
    learner.load_state_dict(state)
    images = data_root / "pacs" / "images"
    assert evaluated(checkpoint, images, tmp_path, "--domains", "sketch")["accuracy"]["sketch"] == \
        pytest.approx(accuracy_by_hand(learner, images, "sketch"))

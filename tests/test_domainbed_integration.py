"""The CLIP algorithms run by a real, unmodified DomainBed checkout.

Needs ``import domainbed`` to work (a checkout on PYTHONPATH, or DOMAINBED_ROOT set to its root) and
DomainBed's own dependencies (wilds; parameterized for its tests): skipped with the reason otherwise, an
error under CLIPOOD_REQUIRE_FRAMEWORKS=1 (tests/conftest.py). Runs on CPU with the tiny random-init
model, which is what the hparams registry gives the Debug datasets. DomainBed's own tests that need a
GPU (test_models, test_networks, test_datasets) or data (test_train) are not run.
"""
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import domainbed_root


ROOT = domainbed_root()
pytestmark = [pytest.mark.needs("domainbed", "wilds"), pytest.mark.filterwarnings("ignore::UserWarning")]
CLIP_ALGORITHMS = ("CLIPood", "CLIPERM", "CLIPZeroShot")


def run(*args, check=True, **env):
    """Run a command as a user would, from DomainBed's root, with this interpreter first on PATH."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
                   "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]), **env}
    result = subprocess.run(args, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=900)
    if check and result.returncode:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def train(output_dir, *extra, module="domainbed.scripts.train", **env):
    return run(sys.executable, "-m", module, "--dataset", "Debug224", "--output_dir", str(output_dir), *extra, **env)


def read_results(output_dir):
    with open(os.path.join(output_dir, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


def sweep(data_dir, *extra):
    """DomainBed's sweep of CLIPood on Debug224: one run per test environment (3), default hparams."""
    return run(sys.executable, "-m", "domainbed.scripts.sweep", "launch", "--datasets", "Debug224",
               "--algorithms", "CLIPood", "--n_hparams", "1", "--n_trials", "1", "--single_test_envs",
               "--data_dir", str(data_dir), "--skip_confirmation", *extra).stdout


# DomainBed's own tests that need neither a GPU (test_models, test_networks, test_datasets) nor data (test_train)
DOMAINBEDS_OWN_TESTS = ("test_hparams_registry", "test_model_selection", "lib.test_misc", "lib.test_query",
                        "scripts.test_collect_results", "scripts.test_sweep")


@pytest.mark.needs("parameterized")
def test_domainbeds_own_tests_pass_with_the_clip_algorithms_registered():
    code = ("import json, sys, unittest\n"
            "from domainbed import algorithms, datasets, hparams_registry\n"
            "registry = unittest.defaultTestLoader.loadTestsFromName('domainbed.test.test_hparams_registry')\n"
            "suite = unittest.defaultTestLoader.loadTestsFromNames('domainbed.test.' + name for name in sys.argv[1:])\n"
            "result = unittest.TextTestRunner(verbosity=0).run(suite)\n"
            "print(json.dumps({'algorithms': algorithms.ALGORITHMS, 'datasets': len(datasets.DATASETS),\n"
            "                  'registry_tests': registry.countTestCases(), 'clip_models': [\n"
            "                      hparams_registry.default_hparams(name, 'Debug224').get('clip_model')\n"
            f"                      for name in {CLIP_ALGORITHMS!r}],\n"
            "                  'skipped': sorted({reason for _, reason in result.skipped})}))\n"
            "sys.exit(not result.wasSuccessful())")
    report = json.loads(run(sys.executable, "-c", code, *DOMAINBEDS_OWN_TESTS).stdout.splitlines()[-1])
    assert set(CLIP_ALGORITHMS) <= set(report["algorithms"])
    assert report["registry_tests"] == len(report["algorithms"]) * report["datasets"]  # the CLIP ones included
    assert report["clip_models"] == ["clipood-tiny"] * 3  # the registry has their hparams
    assert set(report["skipped"]) <= {"needs DATA_DIR environment variable"}  # DomainBed's own: no data here


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The sweep run by DomainBed's local launcher, 3 steps per run: train.py runs as a user's sweep runs it."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    sweep(sweep_dir, "--steps", "3", "--output_dir", str(sweep_dir / "runs"), "--command_launcher", "local")
    return sweep_dir / "runs"


@pytest.fixture(scope="module")
def trained_run(local_sweep):
    """The sweep's run with test environment 0."""
    run_dir, = (path for path in local_sweep.iterdir() if (path / "results.jsonl").exists()
                and read_results(path)[0]["args"]["test_envs"] == [0])
    return str(run_dir)


def test_train_py_writes_domainbeds_outputs_with_the_horizon_it_ran(trained_run):
    assert {"done", "out.txt", "results.jsonl", "model.pkl"} <= set(os.listdir(trained_run))
    rows = read_results(trained_run)
    assert [row["step"] for row in rows] == [0, 2]
    assert rows[-1]["hparams"]["steps"] == 3 and rows[-1]["hparams"]["clip_model"] == "clipood-tiny"
    assert all(0 <= row[f"env{i}_{split}_acc"] <= 1 for row in rows for i in range(3) for split in ("in", "out"))
    assert {"loss", "acc", "lr", "bma_weight"} <= set(rows[-1])
    assert all(row["skipped_share"] == 0.0 for row in rows)  # the share of the window's steps skipped: none here


def test_model_pkl_reloads_to_the_accuracies_train_py_measured(trained_run):
    from domainbed import datasets
    from domainbed.lib import misc

    from domainbed_adapter import load_algorithm
    from domainbed_adapter.evaluate_open import _train_splits

    model_pkl = os.path.join(trained_run, "model.pkl")
    algorithm, saved = load_algorithm(model_pkl)
    assert saved["model_dict"]["clipood_learner"]["step"] == 3
    args = saved["args"]
    random.seed(args["seed"])  # train.py seeds before building the (randomly drawn) Debug data
    np.random.seed(args["seed"])
    torch.manual_seed(args["seed"])
    dataset = datasets.get_dataset_class("Debug224")(None, args["test_envs"], saved["model_hparams"])
    last_row = read_results(trained_run)[-1]
    for name, split in _train_splits(dataset, args).items():
        loader = torch.utils.data.DataLoader(split, batch_size=64)
        assert misc.accuracy(algorithm, loader, None, "cpu") == last_row[f"{name}_acc"], name
    # DomainBed's own reload pattern gives the same predictor
    from domainbed import algorithms
    rebuilt = algorithms.get_algorithm_class("CLIPood")(saved["model_input_shape"], saved["model_num_classes"],
                                                        saved["model_num_domains"], dict(saved["model_hparams"]))
    rebuilt.load_state_dict(saved["model_dict"])
    images = next(iter(torch.utils.data.DataLoader(dataset[0], batch_size=8)))[0]
    assert torch.equal(rebuilt.predict(images), algorithm.predict(images))
    encoder_bytes = 4 * sum(t.numel() for t in algorithm.learner.inference_encoder.state_dict().values())
    assert encoder_bytes < os.path.getsize(model_pkl) < 1.1 * encoder_bytes + 200_000  # the encoder, little else


def test_registration_is_the_hooks_doing_and_the_train_entry_works_without_it(tmp_path):
    # with the hook DomainBed has them: test_domainbeds_own_tests_pass_with_the_clip_algorithms_registered
    probe = "import domainbed.algorithms as a, domainbed.hparams_registry as h; print('CLIPood' in a.ALGORITHMS)"
    assert run(sys.executable, "-c", probe, CLIPOOD_NO_AUTOREGISTER="1").stdout.strip() == "False"
    train(tmp_path, "--algorithm", "CLIPERM", "--steps", "1", module="domainbed_adapter.train",
          CLIPOOD_NO_AUTOREGISTER="1")
    assert read_results(tmp_path)[-1]["hparams"]["steps"] == 1


def test_an_image_folder_dataset_gets_its_class_folders_as_class_names(tmp_path):
    from PIL import Image

    from domainbed_adapter.class_names import FOLDER_CLASS_NAMES
    for environment in ("art_painting", "cartoon", "photo", "sketch"):  # DomainBed's PACS layout
        for label, name in enumerate(FOLDER_CLASS_NAMES["PACS"]):
            (tmp_path / "PACS" / environment / name).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 30), (30 * label, 20 * i, 99)).save(tmp_path / "PACS" / environment / name / f"{i}.png")
    hparams = '{"clip_model": "clipood-tiny", "clip_pretrained": null, "batch_size": 2}'
    out = run(sys.executable, "-m", "domainbed.scripts.train", "--dataset", "PACS", "--data_dir", str(tmp_path),
              "--algorithm", "CLIPood", "--steps", "1", "--hparams", hparams, "--output_dir", str(tmp_path / "out")).stdout
    assert "7 class names from the class folders of PACS" in out
    saved = torch.load(tmp_path / "out" / "model.pkl", map_location="cpu", weights_only=True)
    assert saved["model_dict"]["clipood_learner"]["class_names"] == FOLDER_CLASS_NAMES["PACS"]


def test_a_steps_hparam_that_disagrees_with_train_py_is_an_error(tmp_path):
    result = train(tmp_path, "--algorithm", "CLIPood", "--steps", "2", "--hparams", '{"steps": 5}', check=False)
    # train.py tees stderr into stdout and err.txt
    assert result.returncode != 0 and "train.py will run 2 steps" in result.stdout + result.stderr


def test_a_bad_hparam_stops_train_py_before_it_trains_naming_the_hparam(tmp_path):  # F-H2 and its class
    out = tmp_path / "out"
    result = train(out, "--algorithm", "CLIPood", "--steps", "3", "--hparams", '{"bma_beta": Infinity}', check=False)
    assert result.returncode != 0  # train.py tees stderr into stdout and err.txt
    last_line = result.stdout.strip().splitlines()[-1]
    assert "Error: hparam bma_beta must be a finite number > 0, got inf" in last_line, last_line
    assert not {"done", "model.pkl", "results.jsonl"} & set(os.listdir(out))


def test_sweep_with_domainbeds_launchers_then_collect_results(local_sweep, tmp_path):
    dry = sweep(tmp_path, "--steps", "3", "--output_dir", str(tmp_path / "dry"), "--command_launcher", "dummy")
    assert dry.count("Dummy launcher: python -m domainbed.scripts.train") == 3 and "--algorithm CLIPood" in dry
    table = run(sys.executable, "-m", "domainbed.scripts.collect_results", "--input_dir", str(local_sweep)).stdout
    assert "Total records: 6" in table  # 3 runs, each with a row at step 0 and one at its last step
    rows = [line for line in table.splitlines() if line.startswith("CLIPood")]
    # dataset and averages rows for DomainBed's 3 selection methods; leave-one-domain-out needs sweeps with
    # two test environments, so it has no value with --single_test_envs (the paper's protocol)
    assert len(rows) == 6 and sum(" X" in line for line in rows) == 2
    final = run(sys.executable, "-m", "domainbed_adapter.final_model_table", "--input_dir", str(local_sweep)).stdout
    assert "Debug224: test accuracy per test domain, model selection: final model (end of training), test domain " \
           "out split" in final
    assert len([line for line in final.splitlines() if line.startswith("CLIPood")]) == 2  # Debug224's, Table 1's layout


def test_paper_sweep_script_launches_domainbeds_sweep(tmp_path):
    script = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "domainbed", "launch_sweep.py")
    out = run(sys.executable, script, "--datasets", "PACS", "--algorithms", "CLIPood", "CLIPZeroShot",
              "--data_dir", str(tmp_path), "--output_dir", str(tmp_path / "sweep"), "--command_launcher", "dummy",
              "--skip_confirmation", "--no_report").stdout
    commands = [line for line in out.splitlines() if line.startswith("Dummy launcher:")]
    assert len(commands) == 2 * 4 * 3  # algorithms x PACS test environments x trials
    clipood = [c for c in commands if "--algorithm CLIPood" in c]
    assert all("--steps 5000" in c and '"lr": 5e-06' in c and '"bma_beta": 0.5' in c for c in clipood)
    assert all("--steps 1 " in c for c in commands if "CLIPZeroShot" in c)


def test_paper_sweep_script_reports_a_sweep_without_runs_in_one_line(tmp_path):
    """Issue 19: the summary found no runs (the dummy launcher runs nothing) and the script ended in a
    traceback. Now the summary's one line, and its exit code."""
    script = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "domainbed", "launch_sweep.py")
    result = run(sys.executable, script, "--datasets", "PACS", "--algorithms", "CLIPood", "--n_trials", "1",
                 "--data_dir", str(tmp_path), "--output_dir", str(tmp_path / "sweep"), "--command_launcher", "dummy",
                 "--skip_confirmation", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "domainbed_adapter.summary: error:" in result.stderr


def test_paper_sweep_script_scores_the_whole_test_domain_in_the_wild():
    """Issue 16: the in-the-wild report is the whole test domain (the authors' test set)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("launch_sweep", os.path.join(
        os.path.dirname(__file__), os.pardir, "configs", "domainbed", "launch_sweep.py"))
    launch_sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_sweep)
    args = launch_sweep.argparse.Namespace(output_dir="O")
    wild = launch_sweep.report_commands({"datasets": {"OfficeHome": {"open_class_ratio": 0.5}}}, args)
    assert wild[-1][-4:] == ["--selection", "final", "--split", "all"]
    shift = launch_sweep.report_commands({"datasets": {"PACS": {}}}, args)
    assert shift[-1][-4:] == ["--selection", "final", "--split", "out"]


def test_train_py_runs_leave_the_training_curves_beside_their_output(trained_run):
    """The scalars `clipood train` writes, in the run's output dir: each step's loss averages to what
    results.jsonl reports for its checkpoint interval (steps 1, then 2-3)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(trained_run, "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "train/bma_weight", "train/skipped_steps"} <= set(events.Tags()["scalars"])
    losses = {event.step: event.value for event in events.Scalars("train/loss")}
    rows = read_results(trained_run)
    assert sorted(losses) == [1, 2, 3]
    assert losses[1] == pytest.approx(rows[0]["loss"], rel=1e-5)
    assert (losses[2] + losses[3]) / 2 == pytest.approx(rows[1]["loss"], rel=1e-5)

"""`clipood train` / `clipood demo` as a user runs them: results, exact resume, clear errors, and runs that
cannot be silently ruined (stop signals, a second writer, planted or damaged checkpoints, data that
changes, divergence)."""
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from clipood_plugin.cli import main
from clipood_plugin.data import scan_domain_folders
from clipood_plugin.synthetic import make_demo_dataset

FAST = ["--model", "clipood-tiny", "--pretrained", "none", "--lr", "1e-3", "--batch-size", "4",
        "--eval-every", "2", "--checkpoint-every", "2", "--workers", "0"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("shapes"), images_per_class=6)


def run(*argv):
    return main(list(map(str, argv)))


def test_train_writes_results_plot_and_model(data_dir, tmp_path, capsys):
    assert run("train", "--data-dir", data_dir, "--test-domains", "sketch", "--steps", 4, "--output-dir", tmp_path, *FAST) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["train_domains"] == ["painting", "photo"] and results["test_domains"] == ["sketch"]
    assert set(results["accuracy"]) == {"zero_shot", "final", "bma"}
    assert [h["step"] for h in results["history"]] == [0, 2, 4]
    assert len(results["bma_weights"]) == 5  # a_0 (pretrained) .. a_4
    assert (tmp_path / "results.png").stat().st_size > 0
    assert not (tmp_path / "checkpoint.pt").exists()
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert state["class_names"] == ["circle", "square", "star", "triangle"] and state["step"] == 4
    assert "BMA" in capsys.readouterr().out


@pytest.mark.parametrize("decode", ["cpu", "device"])
def test_interrupted_and_resumed_run_ends_where_an_uninterrupted_one_does(data_dir, tmp_path, decode):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    common = ["train", "--data-dir", data_dir, "--test-domains", "sketch", "--steps", 6, "--decode", decode, *FAST]
    assert run(*common, "--output-dir", whole) == 0
    assert run(*common, "--output-dir", parts, "--stop-after", 3) == 0
    assert (parts / "checkpoint.pt").exists() and not (parts / "results.json").exists()
    assert run(*common, "--output-dir", parts) == 2  # refuses to overwrite the unfinished run
    assert run(*common, "--output-dir", parts, "--resume") == 0
    a, b = (json.loads((d / "results.json").read_text()) for d in (whole, parts))
    for key in ("accuracy", "history", "losses", "bma_weights"):
        assert a[key] == b[key], key
    ma, mb = (torch.load(d / "model.pt", weights_only=True)["inference_encoder"] for d in (whole, parts))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_resume_refuses_changed_settings(data_dir, tmp_path, capsys):
    common = ["train", "--data-dir", data_dir, "--test-domains", "sketch", "--steps", 4, "--output-dir", tmp_path, *FAST]
    assert run(*common, "--stop-after", 2) == 0
    checkpoint = (tmp_path / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert run(*common, "--resume", "--mms-lambda", "0.1", "--margin-kind", "fixed") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--mms-lambda 0.3 -> 0.1, --margin-kind 'adaptive' -> 'fixed'" in err[0], err
    assert (tmp_path / "checkpoint.pt").read_bytes() == checkpoint


@pytest.mark.parametrize("problem, message", [
    ("missing_dir", "does not exist"),
    ("unknown_domain", "unknown test domain"),
    ("missing_class", "lacks ['star']"),
])
def test_bad_input_exits_2_with_a_message(data_dir, tmp_path, capsys, problem, message):
    root, domain = data_dir, "sketch"
    if problem == "missing_dir":
        root = tmp_path / "nowhere"
    elif problem == "unknown_domain":
        domain = "cartoon"
    else:
        root = tmp_path / "copy"
        shutil.copytree(data_dir, root)
        shutil.rmtree(root / "photo" / "star")
    assert run("train", "--data-dir", root, "--test-domains", domain, "--steps", 2, "--output-dir", tmp_path / "out", *FAST) == 2
    assert message in capsys.readouterr().err


def test_unreadable_images_are_skipped_and_counted(data_dir, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(data_dir, root)
    (root / "photo" / "circle" / "broken.png").write_bytes(b"not a png")
    Image.new("RGB", (8, 8)).save(root / "photo" / "circle" / "fine.png")
    out = tmp_path / "out"
    assert run("train", "--data-dir", root, "--test-domains", "sketch", "--steps", 2, "--output-dir", out, *FAST) == 0
    skipped = json.loads((out / "results.json").read_text())["skipped_images"]
    assert [s["path"].endswith("broken.png") for s in skipped] == [True]


def test_demo_runs_on_the_tiny_model(tmp_path, capsys):
    assert run("demo", "--output-dir", tmp_path, "--steps", 4, "--eval-every", 2, "--workers", 0) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["model"] == "clipood-tiny" and results["config"]["steps"] == 4
    assert results["test_domains"] == ["painting"]
    assert "clipood-tiny" in capsys.readouterr().out


# ----------------------------------------------------------------- runs that cannot be silently ruined
def train_argv(data, out, *extra):
    return ["train", "--data-dir", data, "--test-domains", "sketch", "--output-dir", out, *FAST, *extra]


def copied(data_dir, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data_dir, root)
    return root


def assert_same_run(a, b):
    """Two runs' results and final models are the same, bit for bit."""
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    for key in ("accuracy", "history", "losses", "bma_weights", "skipped_images"):
        assert ra[key] == rb[key], key
    ma, mb = (torch.load(d / "model.pt", weights_only=True) for d in (a, b))
    for part in ("inference_encoder", "text_features"):
        sa, sb = (m[part] if isinstance(m[part], dict) else {"": m[part]} for m in (ma, mb))
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), part


def test_help_and_bad_arguments_answer_before_torch_is_imported():
    code = ("import sys\n"
            "from clipood_plugin.cli import main\n"
            "for argv in (['train', '--help'], ['train', '--data-dir', 'd', '--test-domains', 't', '--lr', 'nan'],\n"
            "             ['train', '--data-dir', 'd', '--test-domains', 't', '--steps', '0'],\n"
            "             ['train', '--data-dir', 'd', '--test-domains', 't', '--resume', '--overwrite'],\n"
            "             ['train', '--data-dir', 'd'], ['demo', '--batch-size', '0']):\n"
            "    try:\n"
            "        code = main(argv)\n"
            "    except SystemExit as exit:\n"
            "        code = exit.code\n"
            "    print(code)\n"
            "print(sorted(m for m in ('torch', 'open_clip', 'numpy', 'PIL') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split()[-7:] == ["0", "2", "2", "2", "2", "2", "[]"], result.stdout + result.stderr
    for message in ("--lr must be a finite number > 0, got nan", "--steps must be a whole number >= 1, got 0",
                    "--resume continues", "required: --test-domains", "--batch-size must be a whole number >= 1"):
        assert message in result.stderr


def test_a_finished_run_is_kept_unless_overwrite_is_given(data_dir, tmp_path, capsys):
    argv = train_argv(data_dir, tmp_path, "--steps", 2)
    assert run(*argv) == 0
    model = (tmp_path / "model.pt").read_bytes()
    assert run(*argv, "--seed", 1) == 2
    assert "holds a finished run (results.json, model.pt); pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "model.pt").read_bytes() == model
    assert run(*argv, "--seed", 1, "--overwrite") == 0
    assert (tmp_path / "model.pt").read_bytes() != model
    assert json.loads((tmp_path / "results.json").read_text())["config"]["seed"] == 1


def test_a_second_run_in_an_output_dir_stops_at_once_naming_the_first(data_dir, tmp_path, capsys):
    from test_robustness import held_by_another_process

    with held_by_another_process(tmp_path) as pid:
        assert run(*train_argv(data_dir, tmp_path, "--steps", 2)) == 2
    err = capsys.readouterr().err
    assert f"in use by another run (pid {pid} on {socket.gethostname()}" in err
    assert os.listdir(tmp_path) == ["clipood.lock"]  # nothing written; the killed holder's stale lock stays
    assert run(*train_argv(data_dir, tmp_path, "--steps", 2)) == 0  # a dead holder's lock is no lock


def test_a_planted_or_damaged_checkpoint_is_refused_on_resume_and_runs_no_code(data_dir, tmp_path, capsys):
    from test_robustness import plant_checkpoint

    marker, checkpoint = tmp_path / "code-ran", tmp_path / "out" / "checkpoint.pt"
    checkpoint.parent.mkdir()
    plant_checkpoint(checkpoint, marker)
    assert run(*train_argv(data_dir, tmp_path / "out", "--steps", 4, "--resume")) == 2
    assert not marker.exists()
    assert f"{checkpoint} is not a checkpoint of tensors and plain values" in capsys.readouterr().err
    for damaged in (checkpoint.read_bytes()[:200], b"", np.random.default_rng(0).bytes(5000)):
        checkpoint.write_bytes(damaged)
        assert run(*train_argv(data_dir, tmp_path / "out", "--steps", 4, "--resume")) == 2
        err = capsys.readouterr().err
        assert f"error: {checkpoint} is not a readable checkpoint" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    assert run(*train_argv(data_dir, out, "--steps", 12, "--eval-every", 4)) == 0
    return out


@pytest.mark.parametrize("stop, workers", [(signal.SIGINT, 1), (signal.SIGTERM, 0)], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_saves_the_last_step_and_resume_ends_where_an_uninterrupted_run_ends(
        data_dir, uninterrupted, tmp_path, stop, workers):
    """Ctrl-C in a terminal (and Slurm's SIGTERM) reaches the whole process group, loader processes too;
    here before the first periodic checkpoint (--checkpoint-every 1000)."""
    argv = train_argv(data_dir, tmp_path, "--steps", 12, "--eval-every", 4, "--checkpoint-every", 1000)
    process = subprocess.Popen([sys.executable, "-m", "clipood_plugin", *map(str, argv), "--workers", str(workers)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in process.stdout:
        if line.startswith("step 4:"):  # training is under way
            os.killpg(process.pid, stop)
            break
    out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + stop, err
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["learner"]["step"]
    assert 4 <= saved < 12 and not (tmp_path / "results.json").exists()
    assert err.strip().splitlines()[-1].endswith(f"stopped by {stop.name}; {tmp_path / 'checkpoint.pt'} holds step "
                                                 f"{saved} of 12; continue with the same command and --resume")
    assert run(*argv, "--resume") == 0
    assert_same_run(tmp_path, uninterrupted)


def test_a_diverging_run_saves_and_reports_nothing_from_it(data_dir, tmp_path, capsys):
    assert run(*train_argv(data_dir, tmp_path, "--steps", 30, "--lr", 1e30)) == 2  # > 20 non-finite steps in a row
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "training diverged" in err and "step" in err and "--lr" in err
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "model.pt").exists()


def test_a_changed_dataset_on_resume_is_an_error(data_dir, tmp_path, capsys):
    root = copied(data_dir, tmp_path)
    argv = train_argv(root, tmp_path / "out", "--steps", 4)
    assert run(*argv, "--stop-after", 2) == 0
    (root / "photo" / "circle" / "0000.png").unlink()
    assert run(*argv, "--resume") == 2
    assert "changed since the checkpoint (photo: 24 image files then, 23 now)" in capsys.readouterr().err


def test_images_that_break_during_the_run_are_skipped_listed_and_resume_the_same(data_dir, tmp_path):
    """JPEGs cut to 80%: the scan passes them (only a full decode finds the cut), training replaces
    them, evaluation leaves them out; both are listed, and a resumed run ends the same."""
    root = copied(data_dir, tmp_path)
    cut = [root / "photo" / "circle" / f"000{i}.png" for i in range(3)] + [root / "sketch" / "star" / "0000.png"]
    for path in cut:
        Image.open(path).save(path.with_suffix(".jpg"), quality=95)
        path.unlink()
        data = path.with_suffix(".jpg").read_bytes()
        path.with_suffix(".jpg").write_bytes(data[:int(0.8 * len(data))])
    whole, parts, on_device = tmp_path / "whole", tmp_path / "parts", tmp_path / "device"
    assert run(*train_argv(root, whole, "--steps", 6)) == 0
    assert run(*train_argv(root, parts, "--steps", 6, "--stop-after", 3)) == 0
    assert run(*train_argv(root, parts, "--steps", 6, "--resume")) == 0
    assert_same_run(whole, parts)
    listed = json.loads((whole / "results.json").read_text())["skipped_images"]
    paths = {entry["path"] for entry in listed}
    assert str(cut[-1].with_suffix(".jpg")) in paths and paths <= {str(p.with_suffix(".jpg")) for p in cut}
    assert len(paths) >= 2 and all("truncated" in entry["reason"] for entry in listed)  # a training image too
    assert run(*train_argv(root, on_device, "--steps", 6, "--decode", "device")) == 0  # the loader finds the cut
    assert json.loads((on_device / "results.json").read_text())["skipped_images"] == listed


def test_an_empty_class_folder_counts_as_missing(data_dir, tmp_path, capsys):
    root = copied(data_dir, tmp_path)
    for path in (root / "photo" / "star").iterdir():
        path.unlink()
    assert run(*train_argv(root, tmp_path / "out", "--steps", 2)) == 2
    assert "photo lacks ['star']" in capsys.readouterr().err
    dataset = scan_domain_folders(root, allow_missing_classes=True)
    assert dataset.class_names == ["circle", "square", "star", "triangle"]
    assert not any(label == 2 for _, label in dataset.samples["photo"])


def test_the_offline_weights_error_and_the_random_init_warning_name_this_commands_flags(
        data_dir, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    argv = ["train", "--data-dir", data_dir, "--test-domains", "sketch", "--output-dir", tmp_path / "out"]
    assert run(*argv, "--model", "ViT-B-16", "--pretrained", "openai") == 2
    err = capsys.readouterr().err
    assert "--pretrained /path/to/ViT-B-16-quickgelu.bin with the model named 'ViT-B-16-quickgelu'" in err
    assert "--model clipood-tiny --pretrained none" in err
    assert run(*argv, "--model", "clipood-tiny", "--pretrained", "none", "--data-dir", tmp_path / "nowhere") == 2
    assert "warning: --pretrained none trains from random weights" in capsys.readouterr().err


def test_an_output_dir_the_file_system_refuses_is_one_line_and_exit_2(data_dir, tmp_path):
    """F-M8 (no write permission) and F-M7 (the disk fills at a checkpoint): one line, nothing left behind."""
    from file_system import clipood, one_line_error, read_only_folder

    locked = read_only_folder(tmp_path / "locked")
    result = clipood(*train_argv(data_dir, locked / "run", "--steps", 2), permissions_hold=True)
    assert one_line_error(result, "train") and f"{locked / 'run'}" in result.stderr, result.stderr
    assert list(locked.iterdir()) == []
    full = tmp_path / "full"
    full.mkdir()
    result = clipood(*train_argv(data_dir, full / "run", "--steps", 4), file_size_limit=64 * 1024)
    assert one_line_error(result, "train") and "cannot write" in result.stderr, result.stderr
    assert [p.name for p in (full / "run").glob(".*.tmp")] == []


def test_a_runs_files_have_the_mode_the_umask_gives(data_dir, tmp_path):
    """F-L19: results, model and plot alike (a group sharing the run reads them all)."""
    from file_system import clipood

    result = clipood(*train_argv(data_dir, tmp_path / "run", "--steps", 2), umask=0o022)
    assert result.returncode == 0, result.stderr
    modes = {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "run").iterdir() if path.is_file()}
    assert modes == {"results.json": 0o644, "model.pt": 0o644, "results.png": 0o644}


def test_the_same_command_with_resume_repeated_makes_progress_each_time_and_ends_as_one_run(
        data_dir, uninterrupted, tmp_path, capsys):
    """Slurm's requeue pattern: one command with --stop-after, then the same command with --resume until the
    run has ended. Each time makes --stop-after more steps (12 steps, 5 at a time: 5, 10, 12)."""
    argv = train_argv(data_dir, tmp_path, "--steps", 12, "--eval-every", 4, "--stop-after", 5)
    assert run(*argv) == 0
    assert "stopped at step 5 of 12 after 5 step(s) (--stop-after); continue with the same command and --resume" \
        in capsys.readouterr().out
    resumed_at = []
    while not (tmp_path / "results.json").exists():
        assert len(resumed_at) < 3, resumed_at  # a command that makes no progress would loop here
        assert run(*argv, "--resume") == 0
        resumed_at.append(int(capsys.readouterr().out.split("resumed at step ")[1].split()[0]))
    assert resumed_at == [5, 10]
    assert_same_run(tmp_path, uninterrupted)


def test_a_run_killed_outright_with_loader_processes_can_be_resumed_at_once(data_dir, uninterrupted, tmp_path):
    """kill -9 of the run alone: its orphaned DataLoader processes live on for a while, and must not hold
    the output dir's lock."""
    argv = train_argv(data_dir, tmp_path, "--steps", 12, "--eval-every", 4)
    process = subprocess.Popen([sys.executable, "-m", "clipood_plugin", *map(str, argv), "--workers", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in process.stdout:
            if line.startswith("step 8:"):  # the checkpoint of step 4 or 6 is there, the loaders are running
                break
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        orphans = subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, text=True).stdout.split()
        assert orphans, "no loader process outlived the run: this test would not test the lock"
        assert run(*argv, "--resume") == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert_same_run(tmp_path, uninterrupted)


def gpus_here():
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.parametrize("device", ["gpu", "cuda", "cuda:7", "mps", "cuda:0:1"])
def test_a_bad_device_is_one_line_and_exit_2(data_dir, tmp_path, capsys, device):
    """A login node has no GPU: --device cuda there, like a name torch does not know, is bad input."""
    count = gpus_here()
    if device == "cuda" and count or device == "cuda:7" and count > 7 \
            or device == "mps" and torch.backends.mps.is_available():
        pytest.skip(f"--device {device} is usable on this machine")
    assert run(*train_argv(data_dir, tmp_path, "--steps", 2, "--device", device)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"clipood train: error: --device {device}: "), err
    if device.startswith("cuda:7"):
        assert (f"this machine has {count} GPU(s)" if count else "no CUDA GPU is visible here; give --device cpu") \
            in err
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_mistyped_flag_shows_the_subcommands_usage_and_the_flag_it_resembles(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "--data-dir", "d", "--test-domains", "t", "--stpes", "3"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: clipood train ")
    assert err.strip().splitlines()[-1] == \
        "clipood train: error: unrecognized arguments: --stpes 3 (did you mean --steps?)"


def test_version():
    from clipood_plugin import __version__

    result = subprocess.run([sys.executable, "-m", "clipood_plugin", "--version"], capture_output=True, text=True,
                            timeout=120)
    assert (result.returncode, result.stdout) == (0, f"clipood {__version__}\n")


def clipood_process(*argv):
    return subprocess.run([sys.executable, "-m", "clipood_plugin", *map(str, argv)], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("kind, module", [("domainbed", "domainbed_adapter.summary"),
                                          ("base2new", "dassl_trainers.base2new_summary"),
                                          ("imagenet", "dassl_trainers.imagenet_summary")])
def test_the_summaries_are_subcommands_that_run_as_their_modules_do(tmp_path, kind, module):
    assert "summary" in clipood_process("--help").stdout
    for args in (["--help"], ["--no-such-flag"]):
        through_clipood = clipood_process("summary", kind, *args)
        directly = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300)
        assert (through_clipood.returncode, through_clipood.stdout, through_clipood.stderr) == \
            (directly.returncode, directly.stdout, directly.stderr)
    assert through_clipood.returncode == 2


def test_figure5_is_a_subcommand(tmp_path):
    listed = clipood_process("--help").stdout
    assert "figure5" in listed and "evaluate" in listed
    missing = clipood_process("figure5", "summary", tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip() == (
        f"clipood figure5: error: no {tmp_path / 'figure5.json'}: give the --output-dir of `clipood figure5 run`")


# ----------------------------------------------------------------- curves to watch
def scalars_of(output_dir):
    """{tag: [(step, value)]} of the TensorBoard event files in OUTPUT_DIR/tensorboard, as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(output_dir / "tensorboard"))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_a_run_writes_tensorboard_scalars_of_its_steps_and_evaluations(data_dir, tmp_path):
    pytest.importorskip("tensorboard")
    assert run(*train_argv(data_dir, tmp_path, "--steps", 4)) == 0
    results, scalars = json.loads((tmp_path / "results.json").read_text()), scalars_of(tmp_path)
    assert scalars["train/loss"] == [(step, pytest.approx(loss)) for step, loss in enumerate(results["losses"], 1)]
    assert scalars["train/bma_weight"] == [(step, pytest.approx(weight))
                                           for step, weight in enumerate(results["bma_weights"][1:], 1)]
    assert [step for step, _ in scalars["train/lr"]] == [1, 2, 3, 4]
    assert scalars["train/skipped_steps"] == [(step, 0.0) for step in (1, 2, 3, 4)]
    for key in ("final", "bma"):
        assert scalars[f"accuracy_{key}/sketch"] == [(h["step"], pytest.approx(h[key]["sketch"]))
                                                    for h in results["history"]]
        assert scalars[f"accuracy_{key}/photo_holdout"] == [(h["step"], pytest.approx(h[key]["photo (holdout)"]))
                                                           for h in results["history"]]
        assert [step for step, _ in scalars[f"accuracy_{key}/test_mean"]] == [0, 2, 4]


def test_a_resumed_run_replaces_the_curves_past_its_checkpoint(data_dir, tmp_path):
    """A run killed after its checkpoint of step 2 had logged step 3; resumed from step 2, it logs 3 and 4
    again: TensorBoard shows each step once, that of the resumed run."""
    pytest.importorskip("tensorboard")
    argv = train_argv(data_dir, tmp_path, "--steps", 4)
    assert run(*argv, "--stop-after", 2) == 0
    at_step_2 = (tmp_path / "checkpoint.pt").read_bytes()
    assert run(*argv, "--resume", "--stop-after", 1) == 0  # as far as the killed run got
    (tmp_path / "checkpoint.pt").write_bytes(at_step_2)
    assert run(*argv, "--resume") == 0
    losses = json.loads((tmp_path / "results.json").read_text())["losses"]
    assert scalars_of(tmp_path)["train/loss"] == [(step, pytest.approx(loss)) for step, loss in enumerate(losses, 1)]


def test_the_plot_shows_the_loss_and_says_when_zero_shot_is_chance(data_dir, tmp_path):
    from clipood_plugin.run_report import results_figure

    assert run(*train_argv(data_dir, tmp_path, "--steps", 4)) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    figure = results_figure(results)
    losses = [line for axes in figure.axes for line in axes.get_lines()
              if list(line.get_ydata()) == pytest.approx(results["losses"])]
    assert [list(line.get_xdata()) for line in losses] == [[1, 2, 3, 4]]
    legend = [text.get_text() for axes in figure.axes if axes.get_legend() for text in axes.get_legend().get_texts()]
    assert "zero-shot (random init: chance level)" in legend
    results["config"]["pretrained"] = "openai"
    legend = [text.get_text() for axes in results_figure(results).axes if axes.get_legend()
              for text in axes.get_legend().get_texts()]
    assert "zero-shot" in legend and not any("chance" in label for label in legend)

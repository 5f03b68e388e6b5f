"""What a DomainBed user reads first, against the real DomainBed: the paper sweep script run without a
terminal, and the hparams train.py prints at the top of a run of a folder dataset."""
import json
import os
import subprocess
import sys

import pytest

from test_domainbed_integration import ROOT

pytestmark = [pytest.mark.needs("domainbed", "wilds"), pytest.mark.filterwarnings("ignore::UserWarning")]
LAUNCH_SWEEP = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "domainbed", "launch_sweep.py")


def environment():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
            "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}


def launch_sweep(tmp_path, *extra):
    """launch_sweep.py with stdin from /dev/null (a batch job, CI, nohup): the dummy launcher runs nothing."""
    return subprocess.run([sys.executable, LAUNCH_SWEEP, "--datasets", "PACS", "--algorithms", "CLIPood",
                           "--n_trials", "1", "--data_dir", str(tmp_path), "--output_dir", str(tmp_path / "sweep"),
                           "--command_launcher", "dummy", "--no_report", *extra], cwd=ROOT, env=environment(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


def test_without_a_terminal_the_sweep_script_refuses_in_one_line_naming_skip_confirmation(tmp_path):
    """Round 3: DomainBed's "Are you sure? (y/n)" read EOF and the script ended "exited with code 1"."""
    refused = launch_sweep(tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.strip().splitlines()[-1].endswith("there is no terminal to answer it: pass "
                                                            "--skip_confirmation")
    assert "Dummy launcher" not in refused.stdout
    launched = launch_sweep(tmp_path, "--skip_confirmation")
    assert launched.returncode == 0, launched.stderr
    assert launched.stdout.count("Dummy launcher: python -m domainbed.scripts.train") == 4  # PACS's test envs


def test_the_sweep_script_runs_the_paper_numerics_by_default_and_says_so(tmp_path):
    """README: the *_paper_numerics configs reproduce the published numbers; the script ran the other one."""
    out = launch_sweep(tmp_path, "--skip_confirmation").stdout
    with open(os.path.join(os.path.dirname(LAUNCH_SWEEP), "table1_domain_shift_paper_numerics.json")) as f:
        paper = json.load(f)["datasets"]["PACS"]
    assert out.splitlines()[0].endswith("table1_domain_shift_paper_numerics.json")
    commands = [line for line in out.splitlines() if line.startswith("Dummy launcher:")]
    assert paper["clip_precision"] == "authors-fp16"
    assert commands and all('"clip_precision": "authors-fp16"' in command for command in commands)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity (Linux)")
def test_a_folder_dataset_run_prints_true_hparams_and_no_worker_warning(tmp_path):
    """Round 3: a folder dataset with other classes than PACS's printed PACS's names as its class_names while
    the run used (and recorded) its class folders; and torch's "This DataLoader will create 8 worker processes"
    came twice on a machine with fewer CPUs than PACS's N_WORKERS (here: 1 CPU)."""
    from clipood_plugin.synthetic import CLASSES, make_demo_dataset

    make_demo_dataset(tmp_path / "PACS", images_per_class=4, domains=("art_painting", "cartoon", "photo", "sketch"))
    hparams = '{"clip_model": "clipood-tiny", "clip_pretrained": null, "batch_size": 2, "lr": 0.002}'
    done = subprocess.run([sys.executable, "-m", "domainbed.scripts.train", "--algorithm", "CLIPood", "--dataset",
                           "PACS", "--data_dir", str(tmp_path), "--test_envs", "3", "--steps", "1", "--hparams", hparams,
                           "--output_dir", str(tmp_path / "out")], cwd=ROOT, env=environment(), capture_output=True,
                          text=True, timeout=600, preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "worker processes in total" not in out + done.stderr
    header = out.split("HParams:")[1].split("\n\n")[0]
    printed = [line.strip() for line in header.splitlines() if line.strip().startswith("class_names:")]
    folders = sorted(CLASSES)
    assert printed in (["class_names: None"], [f"class_names: {folders}"]), printed
    assert "'elephant'" not in header
    assert "4 class names from the class folders of PACS" in out
    with open(tmp_path / "out" / "results.jsonl") as f:
        assert all(json.loads(line)["hparams"]["class_names"] == folders for line in f)

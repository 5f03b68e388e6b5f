"""The Slurm launcher in a real, unmodified DomainBed: registered by the import hook, driven by sweep.py.

Needs ``import domainbed`` to work (a checkout on PYTHONPATH, or DOMAINBED_ROOT set to its root) and
DomainBed's dataset module to import (it needs ``wilds``): see tests/conftest.py. No Slurm needed: CLIPOOD_SLURM_DRY_RUN=1
writes the job script, and bash runs one of its tasks the way a Slurm array task would.
"""
import os
import subprocess
import sys

import pytest

from conftest import domainbed_root


ROOT = domainbed_root()
pytestmark = pytest.mark.needs("domainbed")


def run(*args, **env):
    """Run a command from DomainBed's root with this interpreter first on PATH, as a user would."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CLIPOOD_SLURM_")}
    environment.update(PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
                       PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]), **env)
    result = subprocess.run(args, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    if result.returncode:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def test_importing_command_launchers_registers_slurm():
    probe = "from domainbed import command_launchers as c; print(getattr(c.REGISTRY.get('slurm'), '__module__', None))"
    assert run(sys.executable, "-c", probe).strip() == "domainbed_adapter.slurm"
    assert run(sys.executable, "-c", probe, CLIPOOD_NO_AUTOREGISTER="1").strip() == "None"


@pytest.mark.needs("wilds")  # domainbed.datasets, imported by sweep.py
def test_sweep_dry_run_writes_the_job_script_and_its_task_trains(tmp_path):
    logs, sweep_dir = tmp_path / "logs", tmp_path / "sweep"
    out = run(sys.executable, "-m", "domainbed.scripts.sweep", "launch", "--datasets", "Debug224",
              "--algorithms", "CLIPood", "--n_hparams", "1", "--n_trials", "1", "--single_test_envs",
              "--steps", "2", "--data_dir", str(tmp_path), "--output_dir", str(sweep_dir),
              "--command_launcher", "slurm", "--skip_confirmation",
              CLIPOOD_SLURM_DRY_RUN="1", CLIPOOD_SLURM_LOG_DIR=str(logs))
    script, = logs.glob("*.sbatch")
    assert f"Slurm dry run: wrote {script} (array of 3)" in out and "Launched 3 jobs!" in out
    text = script.read_text()
    assert "#SBATCH --array=0-2\n" in text and f"cd {ROOT}\n" in text
    job_dirs = sorted(sweep_dir.iterdir())  # sweep.py makes one per run before launching
    assert len(job_dirs) == 3 and all(f"--output_dir {d}" in text for d in job_dirs)

    run("bash", str(script), SLURM_ARRAY_TASK_ID="1")
    done = [d for d in job_dirs if (d / "done").exists()]
    assert len(done) == 1 and "CLIPood" in (done[0] / "out.txt").read_text()

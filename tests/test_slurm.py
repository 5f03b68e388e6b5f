"""The Slurm launcher without Slurm: the sbatch scripts it writes, run by bash as Slurm would run them
(SLURM_ARRAY_TASK_ID set), and its submission through whatever ``sbatch`` is on PATH."""
import os
import stat
import subprocess

import pytest

from domainbed_adapter.slurm import SlurmSettings, slurm_launcher

TRICKY_COMMANDS = [  # quotes, $, JSON and a newline, as shlex-quoted DomainBed commands can hold
    "echo 'run 0' > out0",
    """python_args='--hparams {"lr": 1e-05, "name": "a b"}'; printf '%s' "$python_args" > out1""",
    "printf 'two\nlines' > out2",
]


@pytest.fixture
def slurm_env(monkeypatch, tmp_path):
    for name in [n for n in os.environ if n.startswith("CLIPOOD_SLURM_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLIPOOD_SLURM_LOG_DIR", str(tmp_path / "logs"))
    return monkeypatch


def sbatch_options(script):
    return [line.split(" ", 1)[1] for line in script.read_text().splitlines() if line.startswith("#SBATCH ")]


def run_task(script, task, cwd):
    subprocess.run(["bash", str(script)], cwd=cwd, check=True, timeout=60,
                   env={**os.environ, "SLURM_ARRAY_TASK_ID": str(task)})


def test_dry_run_writes_one_array_script_with_the_settings(slurm_env, tmp_path, capsys):
    for name, value in {"PARTITION": "gpu-a100", "TIME": "02:00:00", "GPUS": "2", "CPUS": "6", "MEM": "40G",
                        "ARRAY_PARALLELISM": "4", "JOB_NAME": "pacs", "SBATCH_ARGS": "--account=lab --qos=high",
                        "DRY_RUN": "1"}.items():
        slurm_env.setenv(f"CLIPOOD_SLURM_{name}", value)
    scripts = slurm_launcher(TRICKY_COMMANDS)
    assert len(scripts) == 1 and scripts[0].parent == tmp_path / "logs" and scripts[0].name.startswith("pacs_")
    logs = tmp_path / "logs"
    assert sbatch_options(scripts[0]) == [
        "--job-name=pacs", "--array=0-2%4", "--time=02:00:00", "--ntasks=1", "--cpus-per-task=6", "--mem=40G",
        "--gres=gpu:2", "--partition=gpu-a100", f"--output={logs}/%x_%A_%a.out", f"--error={logs}/%x_%A_%a.err",
        "--account=lab", "--qos=high"]
    printed = capsys.readouterr().out
    assert f"Slurm dry run: wrote {scripts[0]} (array of 3); submit it with: sbatch {scripts[0]}" in printed


def test_each_array_task_runs_its_command_verbatim_in_the_launch_directory(slurm_env, tmp_path):
    slurm_env.setenv("CLIPOOD_SLURM_DRY_RUN", "1")
    slurm_env.setenv("CLIPOOD_SLURM_SETUP", "export FROM_SETUP=yes")
    script, = slurm_launcher(TRICKY_COMMANDS + ["echo $FROM_SETUP > out3"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for task in range(4):
        run_task(script, task, cwd=elsewhere)
    assert (tmp_path / "out0").read_text() == "run 0\n"
    assert (tmp_path / "out1").read_text() == '--hparams {"lr": 1e-05, "name": "a b"}'
    assert (tmp_path / "out2").read_text() == "two\nlines"
    assert (tmp_path / "out3").read_text() == "yes\n"
    assert not list(elsewhere.iterdir())


def test_defaults_and_commands_beyond_the_array_size_limit_make_more_arrays(slurm_env, tmp_path):
    slurm_env.setenv("CLIPOOD_SLURM_DRY_RUN", "1")
    slurm_env.setenv("CLIPOOD_SLURM_MAX_ARRAY_SIZE", "2")
    slurm_env.setenv("CLIPOOD_SLURM_GPUS", "0")
    scripts = slurm_launcher([f"echo {i} > out{i}" for i in range(5)])
    assert [sbatch_options(s)[1] for s in scripts] == ["--array=0-1", "--array=0-1", "--array=0-0"]
    options = sbatch_options(scripts[0])
    assert "--time=12:00:00" in options and "--cpus-per-task=8" in options and "--mem=32G" in options
    assert not any(o.startswith(("--gres", "--partition")) for o in options)
    run_task(scripts[2], 0, cwd=tmp_path)
    assert (tmp_path / "out4").read_text() == "4\n"
    assert slurm_launcher([]) == []


@pytest.mark.parametrize("name, value", [("GPUS", "one"), ("CPUS", "0"), ("ARRAY_PARALLELISM", "-1")])
def test_a_bad_setting_names_the_variable(name, value):
    with pytest.raises(ValueError, match=f"CLIPOOD_SLURM_{name} must be an integer"):
        SlurmSettings.from_environ({f"CLIPOOD_SLURM_{name}": value})


def test_submitting_without_sbatch_names_the_fix(slurm_env, tmp_path):
    slurm_env.setenv("PATH", str(tmp_path))  # no sbatch there
    with pytest.raises(RuntimeError, match="CLIPOOD_SLURM_DRY_RUN=1"):
        slurm_launcher(["true"])
    assert not (tmp_path / "logs").exists()  # nothing written before the check


def test_submission_hands_the_script_to_sbatch_and_reports_the_job(slurm_env, tmp_path, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"  # stands in for Slurm's sbatch: records its arguments, answers a job id
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/sbatch_args\necho "4242;cluster"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    slurm_env.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    script, = slurm_launcher(["true"])
    assert (tmp_path / "sbatch_args").read_text().split() == ["--parsable", str(script)]
    assert f"submitted {script} as job array 4242 of 1" in capsys.readouterr().out
    fake.write_text("#!/bin/sh\necho 'sbatch: error: invalid partition' >&2\nexit 1\n")
    with pytest.raises(RuntimeError, match="invalid partition"):
        slurm_launcher(["true"])

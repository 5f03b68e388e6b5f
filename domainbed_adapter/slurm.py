"""A Slurm command launcher for DomainBed sweeps (``--command_launcher slurm``).

DomainBed's sweep hands a launcher the shell commands of the runs to start. This one writes them into
an sbatch job-array script (task i runs command i; at most ``CLIPOOD_SLURM_MAX_ARRAY_SIZE`` tasks per
array, more commands give more arrays) and submits it with ``sbatch``. Each task starts in the directory
the sweep was launched from (DomainBed's root) with the environment of the launching shell (sbatch's
default ``--export=ALL``), so ``python`` is the same interpreter. Plain sbatch, no Python dependency.

Settings are environment variables (docs/slurm.md); ``CLIPOOD_SLURM_DRY_RUN=1`` writes the scripts
without submitting them.
"""
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NAME = "slurm"


def _env_int(environ, name, default, minimum):
    value = environ.get(name, "")
    if value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}; fix or unset it")
    return number


@dataclass
class SlurmSettings:
    partition: str = None         # CLIPOOD_SLURM_PARTITION (default: the cluster's default partition)
    time: str = "12:00:00"        # CLIPOOD_SLURM_TIME, per run
    gpus: int = 1                 # CLIPOOD_SLURM_GPUS, per run (--gres=gpu:N; 0 asks for none)
    cpus: int = 8                 # CLIPOOD_SLURM_CPUS, per run (data loading workers)
    mem: str = "32G"              # CLIPOOD_SLURM_MEM, per run
    log_dir: str = "slurm_logs"   # CLIPOOD_SLURM_LOG_DIR: job scripts and per-task stdout/stderr
    parallelism: int = None       # CLIPOOD_SLURM_ARRAY_PARALLELISM: runs of one array at a time (%N)
    max_array_size: int = 1000    # CLIPOOD_SLURM_MAX_ARRAY_SIZE: tasks per array (Slurm's MaxArraySize)
    job_name: str = "domainbed"   # CLIPOOD_SLURM_JOB_NAME
    sbatch_args: tuple = ()       # CLIPOOD_SLURM_SBATCH_ARGS: more options, e.g. "--account=a --qos=b"
    setup: str = ""               # CLIPOOD_SLURM_SETUP: shell code run first, e.g. "source venv/bin/activate"
    dry_run: bool = False         # CLIPOOD_SLURM_DRY_RUN: write the scripts, do not submit

    @classmethod
    def from_environ(cls, environ=os.environ):
        defaults = cls()
        return cls(
            partition=environ.get("CLIPOOD_SLURM_PARTITION") or None,
            time=environ.get("CLIPOOD_SLURM_TIME") or defaults.time,
            gpus=_env_int(environ, "CLIPOOD_SLURM_GPUS", defaults.gpus, 0),
            cpus=_env_int(environ, "CLIPOOD_SLURM_CPUS", defaults.cpus, 1),
            mem=environ.get("CLIPOOD_SLURM_MEM") or defaults.mem,
            log_dir=environ.get("CLIPOOD_SLURM_LOG_DIR") or defaults.log_dir,
            parallelism=_env_int(environ, "CLIPOOD_SLURM_ARRAY_PARALLELISM", None, 1),
            max_array_size=_env_int(environ, "CLIPOOD_SLURM_MAX_ARRAY_SIZE", defaults.max_array_size, 1),
            job_name=environ.get("CLIPOOD_SLURM_JOB_NAME") or defaults.job_name,
            sbatch_args=tuple(shlex.split(environ.get("CLIPOOD_SLURM_SBATCH_ARGS", ""))),
            setup=environ.get("CLIPOOD_SLURM_SETUP", ""),
            dry_run=environ.get("CLIPOOD_SLURM_DRY_RUN", "") not in ("", "0"),
        )


def sbatch_script(commands, settings, workdir, log_dir):
    """The job-array script: task i runs ``commands[i]`` with bash, in ``workdir``."""
    array = f"0-{len(commands) - 1}" + (f"%{settings.parallelism}" if settings.parallelism else "")
    options = [f"--job-name={settings.job_name}", f"--array={array}", f"--time={settings.time}",
               "--ntasks=1", f"--cpus-per-task={settings.cpus}", f"--mem={settings.mem}"]
    if settings.gpus:
        options.append(f"--gres=gpu:{settings.gpus}")
    if settings.partition:
        options.append(f"--partition={settings.partition}")
    options += [f"--output={log_dir}/%x_%A_%a.out", f"--error={log_dir}/%x_%A_%a.err", *settings.sbatch_args]
    lines = ["#!/bin/bash", *(f"#SBATCH {option}" for option in options),
             "# DomainBed sweep runs, written by domainbed_adapter.slurm: array task i runs COMMANDS[i]",
             "COMMANDS=(", *(shlex.quote(command) for command in commands), ")",
             f"cd {shlex.quote(str(workdir))}"]
    if settings.setup:
        lines.append(settings.setup)
    lines.append('exec bash -c "${COMMANDS[$SLURM_ARRAY_TASK_ID]}"')
    return "\n".join(lines) + "\n"


def _submit(script):
    result = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"sbatch {script} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout.strip().split(";")[0]  # "jobid" or "jobid;cluster"


def slurm_launcher(commands, settings=None):
    """DomainBed command launcher: submit ``commands`` as Slurm job arrays; returns the scripts written."""
    settings = settings or SlurmSettings.from_environ()
    if not commands:
        return []
    if not settings.dry_run and shutil.which("sbatch") is None:
        raise RuntimeError("sbatch is not on PATH: launch the sweep from a Slurm login node, or set "
                           "CLIPOOD_SLURM_DRY_RUN=1 to only write the job scripts")
    log_dir = Path(settings.log_dir).resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    size = settings.max_array_size
    scripts = []
    for first in range(0, len(commands), size):
        chunk = commands[first:first + size]
        # a fresh file name even for two launches in the same second
        handle, name = tempfile.mkstemp(prefix=f"{settings.job_name}_{time.strftime('%Y%m%d-%H%M%S')}_",
                                        suffix=".sbatch", dir=log_dir)
        with os.fdopen(handle, "w") as file:
            file.write(sbatch_script(chunk, settings, os.getcwd(), log_dir))
        script = Path(name)
        scripts.append(script)
        if settings.dry_run:
            print(f"Slurm dry run: wrote {script} (array of {len(chunk)}); submit it with: sbatch {script}")
        else:
            print(f"Slurm: submitted {script} as job array {_submit(script)} of {len(chunk)}; logs in {log_dir}")
    return scripts

"""GPU acceptance: one command that checks a CLIPood install on a CUDA GPU and measures it against its targets.

    python bench/gpu_acceptance.py OUT                              # everything: about 8 minutes on one H200
    python bench/gpu_acceptance.py OUT --dry-run                    # any machine: find the parts, check the imports,
                                                                    # print the commands, run nothing
    python bench/gpu_acceptance.py OUT --only cuda_branches dassl_train --limit dassl_train=200
    python bench/gpu_acceptance.py OUT --frameworks ext/frameworks  # a folder holding DomainBed/ and Dassl.pytorch/

Parts, in the order they run (each in processes of its own, under a time limit):
  cuda_branches          autocast bf16 and fp16, GradScaler, fused AdamW, torch.compile with and without CUDA
                         graphs, the fallback when compiling fails, nvJPEG decoding, pinned transfers
  domainbed_test_models  DomainBed's own domainbed/test/test_models.py on CLIPood, CLIPERM and CLIPZeroShot
  domainbed_train        python -m domainbed.scripts.train --algorithm CLIPood on generated PACS-like JPEGs
  dassl_train            Dassl's tools/train.py --trainer CLIPood, PREC amp-bf16 and amp-fp16, DECODE device
  train_step             bench/train_step.py: ViT-B-16 at batch 36 and 256, compile auto, reduce-overhead and off,
                         against the reference-style step in the same process
  end_to_end             bench/end_to_end.py at batch 36: --decode cpu, --decode device, --augmentation domainbed
  profile                only for a missed target: torch.profiler summary of the step (kernel time, gaps, syncs)

Writes to OUT: results.json (per part: status pass / fail / skip, error, figures, commands; the machine; the verdict
against the targets), acceptance.log (what ran, how long, the outcome), commands.log (every command's output) and,
when a target is missed, profile.txt. The frameworks are found in --frameworks DIR, else where the environment
points (DOMAINBED_ROOT or an importable domainbed; an installed Dassl checkout), else in ../shared/frameworks,
ext/frameworks or ext. Exit code: 0 all parts passed (dry run: all found), 1 otherwise, 2 bad input or no CUDA GPU.
"""
import argparse
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.util import find_spec
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PROJECT = BENCH.parent
CHECKS = BENCH / "acceptance_checks.py"
DASSL_CONFIG = PROJECT / "configs" / "dassl" / "trainers" / "CLIPood" / "vit_b16_dg.yaml"

# seconds; the parts run in this order
DEFAULT_LIMITS = {"cuda_branches": 150, "domainbed_test_models": 90, "domainbed_train": 120, "dassl_train": 180,
                  "train_step": 330, "end_to_end": 200, "profile": 150}
PART_NAMES = tuple(DEFAULT_LIMITS)
MIN_START_SECONDS = 20  # a part is not started with less of the total time limit left
COMPILE_MODES = ("off", "auto", "reduce-overhead")  # cheapest first: a part cut short keeps most figures
STEP_BATCHES = (36, 256)
# (what is promised, threshold, whether the value must stay below it)
TARGETS = {
    "step_batch_36": ("batch 36: images/s at least 3x the reference-style step's", 3.0, False),
    "step_batch_256": ("batch 256: images/s at least 1.4x the reference-style step's", 1.4, False),
    "bma_update_ms": ("BMA update under 0.5 ms", 0.5, True),
    "peak_memory_256": ("peak memory at batch 256 at most 1.2x the reference's", 1.2, True),
    "end_to_end_36": ("end to end at batch 36 within 10% of the pure step rate, best decode option", 0.9, False),
}
# probe keys (imports or checks of acceptance_checks.py probe) each part needs
BASE_NEEDS = ("torch", "torchvision", "numpy", "PIL", "open_clip", "ftfy", "regex", "clipood_plugin.learner",
              "train_step", "end_to_end")
DOMAINBED_NEEDS = ("wilds", "domainbed.datasets", "domainbed.hparams_registry", "domainbed.algorithms",
                   "import hook", "CLIP algorithms in DomainBed")
DASSL_NEEDS = ("yacs", "dassl.config", "dassl.engine", "dassl.data", "import hook", "CLIPood trainer in Dassl")


# ----------------------------------------------------------------------------- frameworks
@dataclass
class Frameworks:
    domainbed: Path = None
    dassl: Path = None
    found_by: dict = field(default_factory=dict)
    looked_in: list = field(default_factory=list)

    def environment(self):
        """The children's environment: the frameworks first on PYTHONPATH, unbuffered output."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        roots = [str(root) for root in (self.domainbed, self.dassl) if root]
        env["PYTHONPATH"] = os.pathsep.join(roots + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        if self.domainbed:
            env["DOMAINBED_ROOT"] = str(self.domainbed)
        return env


def _is_domainbed(root):
    return root is not None and (Path(root) / "domainbed" / "__init__.py").is_file()


def _is_dassl(root):
    return root is not None and (Path(root) / "dassl" / "__init__.py").is_file() and \
        (Path(root) / "tools" / "train.py").is_file()


def _package_root(name):
    """The folder holding package ``name`` as found on sys.path (it is not imported), or None."""
    spec = find_spec(name)
    return Path(spec.origin).parents[1] if spec and spec.origin else None


def locate_frameworks(folder):
    """DomainBed and Dassl.pytorch checkouts: in ``folder`` only when given; else where the environment points,
    then in the default folders."""
    frameworks = Frameworks()
    if folder is None:
        frameworks.looked_in = [PROJECT.parent / "shared" / "frameworks", PROJECT / "ext" / "frameworks", PROJECT / "ext"]
        environment_root = os.environ.get("DOMAINBED_ROOT")
        for root, how in ((environment_root, "DOMAINBED_ROOT"), (_package_root("domainbed"), "importable domainbed")):
            if frameworks.domainbed is None and _is_domainbed(root):
                frameworks.domainbed, frameworks.found_by["DomainBed"] = Path(root).resolve(), how
        if _is_dassl(_package_root("dassl")):
            frameworks.dassl, frameworks.found_by["Dassl.pytorch"] = _package_root("dassl").resolve(), "installed dassl"
    else:
        frameworks.looked_in = [Path(folder)]
    for place in frameworks.looked_in:
        if frameworks.domainbed is None and _is_domainbed(place / "DomainBed"):
            frameworks.domainbed, frameworks.found_by["DomainBed"] = (place / "DomainBed").resolve(), str(place)
        if frameworks.dassl is None and _is_dassl(place / "Dassl.pytorch"):
            frameworks.dassl, frameworks.found_by["Dassl.pytorch"] = (place / "Dassl.pytorch").resolve(), str(place)
    return frameworks


# ----------------------------------------------------------------------------- commands and their outputs
@dataclass
class Output:
    returncode: int  # None: stopped at the time limit
    stdout: str
    stderr: str
    seconds: float

    @property
    def records(self):
        """The JSON objects printed one per line on stdout."""
        found = []
        for line in self.stdout.splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return found


@dataclass
class Command:
    """One process of a part. ``read(output)`` returns (figures, problems); a command without ``read`` prepares
    the next ones, which are not run if it fails."""
    label: str
    argv: list
    cwd: Path = PROJECT
    read: object = None

    def shell(self):
        line = shlex.join(str(a) for a in self.argv)
        return line if self.cwd == PROJECT else f"cd {shlex.quote(str(self.cwd))} && {line}"


@dataclass
class Part:
    name: str
    commands: list
    needs: tuple = BASE_NEEDS
    missing: list = field(default_factory=list)  # what was not found: the part is skipped


def _tail(text, limit=1500):
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _collect(records, key, value):
    return [r for r in records if r.get(key) == value]


# ----------------------------------------------------------------------------- reading outputs
def read_cuda_branches(output):
    figures, problems = {}, []
    for record in output.records:
        name = record.pop("check")
        figures[name] = record
        if record["status"] != "pass":
            problems.append(f"{name}: {record.get('error')}")
    return figures, problems


def read_test_models(output):
    (record,) = output.records or [{"error": "it printed no result"}]
    if "error" in record:
        return {}, [record["error"]]
    problems = [f"ran {record['tests_run']} tests, expected {record['expected']}"] \
        if record["tests_run"] != record["expected"] else []
    return {"tests_run": record["tests_run"]}, problems + record["failures"]


def read_domainbed_run(output_dir, steps):
    def read(output):
        results = Path(output_dir) / "results.jsonl"
        if not results.is_file():
            return {}, [f"no {results}"]
        rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        last = rows[-1]
        accuracies = {k: v for k, v in last.items() if k.endswith("_acc")}
        figures = {"step": last["step"], "loss": last.get("loss"), "step_time_s": last.get("step_time"),
                   "mem_gb": last.get("mem_gb"), "accuracies": accuracies}
        problems = []
        if last["step"] != steps - 1 or not (Path(output_dir) / "done").is_file():
            problems.append(f"the run ended at step {last['step']} of {steps} without its 'done' file")
        if not all(0 <= v <= 1 for v in accuracies.values()) or not accuracies:
            problems.append(f"accuracies {accuracies}")
        if not (last.get("loss") is not None and abs(last["loss"]) < float("inf")):
            problems.append(f"loss {last.get('loss')}")
        if not last.get("mem_gb"):
            problems.append("no CUDA memory was used (mem_gb 0): the run was not on the GPU")
        return figures, problems
    return read


def read_dassl_run(precision):
    def read(output):
        text = output.stdout
        losses = [float(x) for x in re.findall(r"\bloss (\S+) \(", text)]
        accuracy = re.findall(r"\* accuracy: ([\d.]+)%", text)
        figures = {"losses": losses, "accuracy": float(accuracy[-1]) if accuracy else None}
        problems = [f"the log lacks {line!r}" for line in (f"precision {precision}",
                                                           "training images are decoded and augmented on cuda",
                                                           "Finish training") if line not in text]
        if not losses or not all(abs(loss) < float("inf") for loss in losses):
            problems.append(f"training losses {losses}")
        if accuracy == []:
            problems.append("no test accuracy")
        return figures, problems
    return read


def read_train_step(output):
    figures, problems = {}, []
    for record in output.records:
        if "batch" not in record:
            continue
        batch = f"batch_{record['batch']}"
        mode = (record.get("learner_kwargs") or {}).get("compile")
        key = "reference" if record["variant"] == "reference" else f"compile_{mode}"
        entry = figures.setdefault(batch, {}).setdefault(key, {})
        entry.update({k: v for k, v in record.items() if k not in ("variant", "batch", "model", "device", "steps",
                                                                   "learner_kwargs", "weights")})
        if "error" in record:
            problems.append(f"{batch} {key}: {record['error']}")
        if "compile_fell_back" in record:
            problems.append(f"{batch} {key}: compiling failed, its figures are the uncompiled step's: "
                            f"{record['compile_fell_back'][:300]}")
    for batch in STEP_BATCHES:
        for key in ("reference",) + tuple(f"compile_{m}" for m in COMPILE_MODES):
            if "img_per_s" not in figures.get(f"batch_{batch}", {}).get(key, {}):
                problems.append(f"batch_{batch} {key}: not measured")
    return figures, problems


def read_end_to_end(output):
    records = output.records
    step_only, loop, ratio = (_collect(records, "variant", v) for v in ("step_only", "end_to_end", "end_to_end/step_only"))
    if not (step_only and loop and ratio):
        return {}, ["it printed no figures"]
    loop = loop[0]
    return {"step_only_img_per_s": step_only[0]["img_per_s"], "img_per_s": loop["img_per_s"],
            "ratio_to_step": ratio[0]["img_per_s_ratio"], "data_wait_share": loop["data_wait_share"],
            "warmup_s": loop["warmup_s"], "decode": loop["decode"], "augmentation": loop["augmentation"]}, []


def read_profile(output):
    records = [r for r in output.records if "profile" in r]
    return (records[0], []) if records else ({}, ["it printed no profile"])


# ----------------------------------------------------------------------------- the verdict
def _geometric_mean(values):
    return statistics.geometric_mean(values) if values and all(v and v > 0 for v in values) else None


def verdict(parts):
    """Figures against TARGETS. The compile mode recommended is the one with the best geometric mean of the speedups
    at batch 36 and 256 (modes that fell back excluded); the step targets are read for it, with every mode's value
    beside it. The decode option is the one whose end-to-end rate is closest to its step rate."""
    steps = parts.get("train_step", {}).get("figures", {}).get("compare", {})
    by_mode = {}
    for mode in COMPILE_MODES:
        cases = {batch: steps.get(f"batch_{batch}", {}).get(f"compile_{mode}", {}) for batch in STEP_BATCHES}
        if any(case.get("compile_fell_back") for case in cases.values()):
            continue
        bma = [case["bma_ms"] for case in cases.values() if "bma_ms" in case]
        by_mode[mode] = {"step_batch_36": cases[36].get("img_per_s_ratio"),
                         "step_batch_256": cases[256].get("img_per_s_ratio"),
                         "bma_update_ms": round(statistics.median(bma), 4) if bma else None,
                         "peak_memory_256": cases[256].get("peak_mem_ratio")}
    speedups = {mode: _geometric_mean([v["step_batch_36"], v["step_batch_256"]]) for mode, v in by_mode.items()}
    measured = {mode: s for mode, s in speedups.items() if s is not None}
    compile_choice = max(measured, key=measured.get) if measured else None

    runs = parts.get("end_to_end", {}).get("figures", {})
    decode_ratios = {run["decode"]: run["ratio_to_step"] for run in runs.values()
                     if run.get("augmentation") == "clipood" and run.get("ratio_to_step")}
    decode_choice = max(decode_ratios, key=decode_ratios.get) if decode_ratios else None

    targets = {}
    for name, (promise, threshold, below) in TARGETS.items():
        if name == "end_to_end_36":
            value, detail = decode_ratios.get(decode_choice), {"by_decode": decode_ratios}
        else:
            value = by_mode[compile_choice][name] if compile_choice else None
            detail = {"by_compile": {mode: v[name] for mode, v in by_mode.items()}}
        met = None if value is None else (value < threshold if below else value >= threshold)
        targets[name] = {"target": promise, "value": value, "met": met, **detail}
    result = {"compile_recommended": compile_choice, "compile_speedup_geomean": measured,
              "decode_recommended": decode_choice, "targets": targets,
              "missed": [name for name, t in targets.items() if t["met"] is False],
              "not_measured": [name for name, t in targets.items() if t["met"] is None]}
    domainbed = runs.get("domainbed_augmentation", {})
    plain = runs.get("decode_cpu", {})
    if domainbed.get("img_per_s") and plain.get("img_per_s"):
        result["domainbed_pipeline"] = {
            "img_per_s": domainbed["img_per_s"], "ratio_to_step": domainbed["ratio_to_step"],
            "relative_to_clipood_augmentation": round(domainbed["img_per_s"] / plain["img_per_s"], 3)}
    return result


# ----------------------------------------------------------------------------- the session
class Session:
    def __init__(self, args, out, work, frameworks):
        self.args, self.out, self.work, self.frameworks = args, out, work, frameworks
        self.env = frameworks.environment()
        self.python = sys.executable
        self.start = time.monotonic()
        self.results = {"mode": "dry-run" if args.dry_run else "run", "started_utc": _now(), "project": str(PROJECT),
                        "model": args.model, "frameworks": {
                            "DomainBed": str(frameworks.domainbed) if frameworks.domainbed else None,
                            "Dassl.pytorch": str(frameworks.dassl) if frameworks.dassl else None,
                            "found_by": frameworks.found_by}, "parts": {}}
        self.limits = {**DEFAULT_LIMITS, **args.limit}
        (out / "acceptance.log").write_text("")
        (out / "commands.log").write_text("")

    # ------------------------------------------------------------- output
    def log(self, message):
        line = f"[{datetime.now().strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        with open(self.out / "acceptance.log", "a") as f:
            f.write(line + "\n")

    def save(self):
        self.results["seconds"] = round(time.monotonic() - self.start, 1)
        path = self.out / "results.json"
        path.with_suffix(".tmp").write_text(json.dumps(self.results, indent=1) + "\n")
        os.replace(path.with_suffix(".tmp"), path)

    # ------------------------------------------------------------- processes
    def execute(self, command, seconds):
        """Run one command with its output in files (no pipe to fill); stopped with its whole process group
        (data loader workers included) at the time limit."""
        stdout_path, stderr_path = self.work / "stdout.txt", self.work / "stderr.txt"
        start = time.monotonic()
        with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
            process = subprocess.Popen([str(a) for a in command.argv], cwd=command.cwd, env=self.env, stdout=stdout,
                                       stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                returncode = process.wait(timeout=max(seconds, 1))
            except subprocess.TimeoutExpired:
                returncode = None
            finally:  # the command's process group: itself at the time limit, any worker it left behind
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
        output = Output(returncode, stdout_path.read_text(errors="replace"), stderr_path.read_text(errors="replace"),
                        round(time.monotonic() - start, 1))
        with open(self.out / "commands.log", "a") as f:
            f.write(f"===== {command.shell()}\n(exit {returncode}, {output.seconds} s)\n--- stdout\n{output.stdout}\n"
                    f"--- stderr\n{output.stderr}\n")
        return output

    def probe(self):
        argv = [self.python, CHECKS, "probe"] + ["--domainbed"] * bool(self.frameworks.domainbed) + \
            ["--dassl"] * bool(self.frameworks.dassl)
        output = self.execute(Command("probe", argv), 120)
        if output.returncode != 0 or not output.records:
            return {"imports": {}, "checks": {"probe": f"exit {output.returncode}: {_tail(output.stderr)}"}}
        return output.records[-1]

    # ------------------------------------------------------------- parts
    def parts(self):
        """The parts by name, in the order they run."""
        return {"cuda_branches": self.cuda_branches_part(), **self.domainbed_parts(), "dassl_train": self.dassl_part(),
                "train_step": self.train_step_part(), "end_to_end": self.end_to_end_part(),
                "profile": self.profile_part(self.results.get("verdict"))}  # remade once the figures are in

    def cuda_branches_part(self):
        return Part("cuda_branches", [Command("checks", [self.python, CHECKS, "cuda-branches"], read=read_cuda_branches)])

    def domainbed_parts(self):
        root, data, out, steps = self.frameworks.domainbed, self.work / "domainbed_data", self.work / "domainbed_out", 5
        hparams = json.dumps({"clip_model": "clipood-tiny", "clip_pretrained": None, "batch_size": 8})
        tests = Part("domainbed_test_models", [
            Command("test_models", [self.python, CHECKS, "domainbed-test-models"], cwd=root or PROJECT,
                    read=read_test_models)], BASE_NEEDS + DOMAINBED_NEEDS + ("parameterized", "domainbed.test.helpers"))
        train = Part("domainbed_train", [
            Command("data", [self.python, CHECKS, "make-pacs", data]),
            Command("train", [self.python, "-m", "domainbed.scripts.train", "--dataset", "PACS", "--data_dir", data,
                              "--algorithm", "CLIPood", "--steps", str(steps), "--checkpoint_freq", str(steps),
                              "--hparams", hparams, "--output_dir", out], cwd=root or PROJECT,
                    read=read_domainbed_run(out, steps))], BASE_NEEDS + DOMAINBED_NEEDS)
        if root is None:
            for part in (tests, train):
                part.missing.append(self._not_found("DomainBed", "DomainBed/ (github facebookresearch/DomainBed)"))
        elif not (root / "domainbed" / "test" / "test_models.py").is_file():
            tests.missing.append(f"{root}/domainbed/test/test_models.py does not exist")
        return {part.name: part for part in (tests, train)}

    def dassl_part(self):
        root, data = self.frameworks.dassl, self.work / "dassl_data"
        commands = [Command("data", [self.python, CHECKS, "make-pacs", data])]
        for precision in ("amp-bf16", "amp-fp16"):
            commands.append(Command(precision, [
                self.python, "tools/train.py", "--root", data, "--seed", "1", "--trainer", "CLIPood",
                "--dataset-config-file", "configs/datasets/dg/pacs.yaml", "--config-file", DASSL_CONFIG,
                "--source-domains", "art_painting", "cartoon", "photo", "--target-domains", "sketch",
                "--output-dir", self.work / f"dassl_{precision}", "MODEL.BACKBONE.NAME", "clipood-tiny",
                "TRAINER.CLIPOOD.PRETRAINED", "", "TRAINER.CLIPOOD.PREC", precision, "TRAINER.CLIPOOD.DECODE", "device",
                "TRAINER.CLIPOOD.ITERS_PER_EPOCH", "5", "OPTIM.MAX_EPOCH", "1", "DATALOADER.NUM_WORKERS", "4"],
                cwd=root or PROJECT, read=read_dassl_run(precision)))
        part = Part("dassl_train", commands, BASE_NEEDS + DASSL_NEEDS)
        if root is None:
            part.missing.append(self._not_found(
                "Dassl", "Dassl.pytorch/ with its tools/train.py (github KaiyangZhou/Dassl.pytorch)"))
        elif not (root / "configs" / "datasets" / "dg" / "pacs.yaml").is_file():
            part.missing.append(f"{root}/configs/datasets/dg/pacs.yaml does not exist")
        return part

    def train_step_part(self):
        return Part("train_step", [Command("compare", [
            self.python, CHECKS, "train-step", "--model", self.args.model, "--batch", *map(str, STEP_BATCHES),
            "--compile", *COMPILE_MODES], read=read_train_step)])

    def end_to_end_part(self):
        jpegs = self.work / "jpegs"
        run = [self.python, BENCH / "end_to_end.py", "--device", "cuda", "--model", self.args.model, "--batch", "36",
               "--workers", "4", "--data-dir", jpegs]
        return Part("end_to_end", [
            Command("data", [self.python, CHECKS, "make-jpegs", jpegs]),
            Command("decode_cpu", run + ["--decode", "cpu"], read=read_end_to_end),
            Command("decode_device", run + ["--decode", "device"], read=read_end_to_end),
            Command("domainbed_augmentation", run + ["--augmentation", "domainbed"], read=read_end_to_end)])

    def profile_part(self, judged):
        """Profiles for the missed targets; without figures (a dry run, --only profile) the training step at both
        batch sizes with compile auto."""
        python, model, table = self.python, self.args.model, self.out / "profile.txt"
        if judged and judged["missed"]:
            missed, mode = judged["missed"], judged["compile_recommended"] or "auto"
            batches = sorted({36 for t in missed if t in ("step_batch_36", "bma_update_ms")} |
                             {256 for t in missed if t in ("step_batch_256", "peak_memory_256")})
        else:
            missed, mode, batches = [], "auto", list(STEP_BATCHES)
        commands = [Command(f"step_batch_{b}", [python, CHECKS, "profile-step", "--model", model, "--batch", str(b),
                                                "--compile", mode, "--table", table], read=read_profile)
                    for b in batches]
        if "end_to_end_36" in missed:
            jpegs = self.work / "jpegs"
            if not jpegs.is_dir():
                commands.append(Command("data", [python, CHECKS, "make-jpegs", jpegs]))
            commands.append(Command("end_to_end", [
                python, CHECKS, "profile-end-to-end", "--model", model, "--data-dir", jpegs,
                "--decode", judged["decode_recommended"] or "cpu", "--table", table], read=read_profile))
        return Part("profile", commands)

    def _not_found(self, name, what):
        places = ", ".join(str(p) for p in self.frameworks.looked_in)
        where = f"{places}" if self.args.frameworks else f"the environment (DOMAINBED_ROOT, PYTHONPATH, installed " \
                                                          f"packages) and {places}"
        return f"{name} not found: looked for {what} in {where}; pass --frameworks DIR holding DomainBed/ and " \
               "Dassl.pytorch/"

    def import_problems(self, part, probe):
        """What the probe found wrong among what ``part`` needs (everything, if the probe itself failed)."""
        found = {**probe.get("imports", {}), **probe.get("checks", {})}
        if "probe" in found:
            return [f"the probe of the imports failed: {found['probe']}"]
        return [f"{key}: {found[key]}" for key in part.needs if found.get(key, "ok") != "ok"]

    def run_part(self, part):
        seconds_left = self.args.total_limit - (time.monotonic() - self.start)
        limit = min(self.limits[part.name], seconds_left)
        record = {"status": "pass", "error": None, "limit_s": round(limit), "commands": [c.shell() for c in part.commands],
                  "figures": {}}
        if limit < MIN_START_SECONDS:
            return {**record, "status": "skip", "error": f"not started: {seconds_left:.0f} s of --total-limit left"}
        self.log(f"{part.name}: started, limit {limit:.0f} s")
        start, problems = time.monotonic(), []
        for command in part.commands:
            remaining = limit - (time.monotonic() - start)
            if remaining <= 0:
                problems.append(f"{command.label}: not started, the part's {limit:.0f} s are spent")
                continue
            output = self.execute(command, remaining)
            if output.returncode != 0:
                stopped = "stopped at the time limit" if output.returncode is None else f"exit code {output.returncode}"
                problems.append(f"{command.label}: {stopped}: {_tail(output.stderr)}")
            if command.read is not None:
                try:
                    figures, found = command.read(output)
                except Exception as error:  # a run cut short leaves output its reader cannot parse
                    figures, found = {}, [f"its output could not be read ({type(error).__name__}: {error})"]
                record["figures"][command.label] = figures
                problems += [f"{command.label}: {p}" for p in found]
            elif output.returncode != 0:
                break
        record["seconds"] = round(time.monotonic() - start, 1)
        if problems:
            record.update(status="fail", error="\n".join(problems))
        return record

    # ------------------------------------------------------------- modes
    def selected(self):
        return [name for name in PART_NAMES if not self.args.only or name in self.args.only]

    def dry_run(self):
        probe = self.probe()
        self.results["imports"] = probe
        self._print_header(probe)
        parts, complete = self.parts(), True
        for name in self.selected():
            part = parts[name]
            problems = self.import_problems(part, probe)
            if part.missing:
                status, error = "skip", "\n".join(part.missing)
            elif problems:
                status, error = "fail", "\n".join(problems)
            else:
                status, error = "dry-run", None
            complete &= status == "dry-run"
            when = " (only when a target is missed; without figures, both batch sizes)" if name == "profile" else ""
            self.log(f"{name}: {status}, limit {self.limits[name]} s{when}" + (f"\n  {error}" if error else ""))
            for command in part.commands:
                self.log(f"  $ {command.shell()}")
            self.results["parts"][name] = {"status": status, "error": error, "limit_s": self.limits[name],
                                           "commands": [c.shell() for c in part.commands]}
        self.results["finished_utc"] = _now()
        self.save()
        self.log(f"dry run: {'every part found' if complete else 'some parts are missing or broken (above)'}; "
                 f"{self.out / 'results.json'}")
        return 0 if complete else 1

    def _print_header(self, probe):
        self.log(f"dry run: nothing runs. WORK={self.work} is a temporary folder; the commands run in "
                 f"{PROJECT} unless they say otherwise, with")
        for key in ("PYTHONPATH", "DOMAINBED_ROOT"):
            if self.env.get(key):
                self.log(f"  {key}={self.env[key]}")
        for name, root in (("DomainBed", self.frameworks.domainbed), ("Dassl.pytorch", self.frameworks.dassl)):
            self.log(f"{name}: {root} ({self.frameworks.found_by[name]})" if root else f"{name}: not found")
        broken = {k: v for k, v in {**probe.get("imports", {}), **probe.get("checks", {})}.items() if v != "ok"}
        self.log("imports and registrations: " + ("all ok" if not broken else
                                                  "; ".join(f"{k}: {v}" for k, v in broken.items())))

    def run(self):
        probe = self.probe()
        self.results["imports"] = probe
        machine = self.execute(Command("machine", [self.python, CHECKS, "machine"]), 120).records
        self.results["machine"] = machine[-1] if machine else None
        self.log(f"machine: {self.results['machine']}")
        failed, parts = False, self.parts()
        for name in self.selected():
            if name == "profile":
                judged = self.results.get("verdict")
                if self.args.only != ["profile"] and not (judged and judged["missed"]):
                    self.results["parts"][name] = {"status": "skip", "error": "no measured target missed: no profile"}
                    continue
                parts[name] = self.profile_part(judged)
            part, problems = parts[name], self.import_problems(parts[name], probe)
            if part.missing:
                record = {"status": "skip", "error": "\n".join(part.missing)}
            elif problems:
                record = {"status": "fail", "error": "\n".join(problems)}
            else:
                record = self.run_part(part)
            failed |= record["status"] == "fail"
            self.results["parts"][name] = record
            self.results["verdict"] = verdict(self.results["parts"])
            self.save()
            self.log(f"{name}: {record['status']}" + (f" in {record['seconds']} s" if "seconds" in record else "") +
                     ("\n  " + record["error"].replace("\n", "\n  ") if record["error"] else ""))
        self.results["finished_utc"] = _now()
        self.save()
        self._print_verdict()
        return 1 if failed else 0

    def _print_verdict(self):
        judged = self.results["verdict"]
        self.log(f"verdict: compile {judged['compile_recommended']}, decode {judged['decode_recommended']} recommended")
        for name, target in judged["targets"].items():
            outcome = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
            self.log(f"  {outcome}: {target['target']} (value {target['value']})")
        self.log(f"results: {self.out / 'results.json'}")


def _now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cuda_problem():
    """None when torch sees a CUDA GPU, else the one line saying so."""
    try:
        import torch
    except ImportError as error:
        return f"gpu_acceptance.py: torch cannot be imported ({error}); install it, or use --dry-run"
    if not torch.cuda.is_available():
        return "gpu_acceptance.py: a CUDA GPU is needed and torch sees none; on this machine use --dry-run"
    return None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="folder for results.json, acceptance.log, commands.log (and profile.txt)")
    parser.add_argument("--frameworks", help="folder holding DomainBed/ and Dassl.pytorch/ (default: the environment, "
                                             "then ../shared/frameworks, ext/frameworks, ext)")
    parser.add_argument("--dry-run", action="store_true", help="find the parts, check imports, print the commands")
    parser.add_argument("--only", nargs="+", choices=PART_NAMES, metavar="PART", help=f"run these parts: {PART_NAMES}")
    parser.add_argument("--limit", action="append", default=[], metavar="PART=SECONDS",
                        help=f"time limit of a part (repeatable); defaults {DEFAULT_LIMITS}")
    parser.add_argument("--total-limit", type=float, default=540, help="seconds for all parts together (540)")
    parser.add_argument("--model", default="ViT-B-16", help="model of train_step, end_to_end and profile")
    args = parser.parse_args(argv)
    limits = {}
    for item in args.limit:
        name, _, seconds = item.partition("=")
        if name not in PART_NAMES or not seconds.isdigit() or int(seconds) < 1:
            parser.error(f"--limit {item}: write PART=SECONDS with PART one of {', '.join(PART_NAMES)}")
        limits[name] = int(seconds)
    args.limit = limits
    if args.frameworks is not None and not Path(args.frameworks).is_dir():
        parser.error(f"--frameworks {args.frameworks} is not a folder; give the one holding DomainBed/ and "
                     "Dassl.pytorch/")
    if Path(args.output).exists() and not Path(args.output).is_dir():
        parser.error(f"{args.output} is a file; give a folder for the results")
    return args


def main(argv=None):
    args = parse_args(argv)
    if not args.dry_run:
        problem = _cuda_problem()
        if problem:
            print(problem, file=sys.stderr)
            return 2
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clipood_acceptance_") as work:
        session = Session(args, out, Path(work), locate_frameworks(args.frameworks))
        return session.dry_run() if args.dry_run else session.run()


if __name__ == "__main__":
    sys.exit(main())

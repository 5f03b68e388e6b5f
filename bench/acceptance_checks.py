"""The steps of bench/gpu_acceptance.py that run in a process of their own; each prints JSON lines on stdout.

    python bench/acceptance_checks.py probe [--domainbed] [--dassl]   # imports and registrations (the dry run's check)
    python bench/acceptance_checks.py machine                          # GPU, driver, versions
    python bench/acceptance_checks.py train-step --batch 36 256 --compile auto reduce-overhead off
    python bench/acceptance_checks.py cuda-branches                    # every CUDA branch of the learner, pass/fail
    python bench/acceptance_checks.py make-jpegs DIR                   # end_to_end.py's photo-like JPEGs
    python bench/acceptance_checks.py make-pacs DIR                    # the same in PACS's layouts: DomainBed's, Dassl's
    python bench/acceptance_checks.py domainbed-test-models            # DomainBed's test_models.py, CLIP algorithms
    python bench/acceptance_checks.py profile-step --batch 36 --compile auto --table FILE
    python bench/acceptance_checks.py profile-end-to-end --data-dir DIR --decode cpu --table FILE

``--device`` (default cuda) lets a step run elsewhere for development; on a CPU the CUDA-only checks fail.
"""
import argparse
import importlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import unittest
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, schedule

from bench_utils import emit, log, synchronize

# The project's and the benchmarks' modules are imported where used: the probe reports each one's import failure.

CLIP_ALGORITHMS = ("CLIPood", "CLIPERM", "CLIPZeroShot")
PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
HOOK_MISSING = ("the import hook is not active: install the project (pip install -e .); its .pth file registers "
                "CLIPood into DomainBed and Dassl when they are imported")


# ----------------------------------------------------------------------------- probe, machine
def _try_import(name):
    try:
        importlib.import_module(name)
        return "ok"
    except Exception as error:  # any import-time failure is what the probe reports
        return f"{type(error).__name__}: {error}"


def probe(args):
    """One line: {"imports": {module: "ok" or the error}, "checks": {name: "ok" or what is wrong}}."""
    modules = ["torch", "torchvision", "numpy", "PIL", "open_clip", "ftfy", "regex", "clipood_plugin.learner",
               "train_step", "end_to_end"]
    if args.domainbed:
        modules += ["parameterized", "wilds", "domainbed.datasets", "domainbed.hparams_registry",
                    "domainbed.algorithms", "domainbed.test.helpers"]
    if args.dassl:
        modules += ["yacs", "dassl.config", "dassl.engine", "dassl.data"]
    imports = {name: _try_import(name) for name in modules}
    checks = {"import hook": "ok" if "clipood_autoregister" in sys.modules else HOOK_MISSING}
    if imports["clipood_plugin.learner"] == "ok":
        from torchvision import transforms

        from clipood_plugin.device_decoding import DeviceAugmentation
        try:
            DeviceAugmentation(transforms.Compose([transforms.RandomResizedCrop(224), transforms.ToTensor()]))
            checks["decode on the device"] = "ok"
        except ValueError as error:
            checks["decode on the device"] = str(error)
    if args.domainbed and imports["domainbed.algorithms"] == "ok":
        from domainbed import algorithms
        missing = [name for name in CLIP_ALGORITHMS if name not in algorithms.ALGORITHMS]
        checks["CLIP algorithms in DomainBed"] = f"not registered: {missing}; {HOOK_MISSING}" if missing else "ok"
    if args.dassl and imports["dassl.engine"] == "ok":
        from dassl.engine import TRAINER_REGISTRY
        registered = "CLIPood" in TRAINER_REGISTRY.registered_names()
        checks["CLIPood trainer in Dassl"] = "ok" if registered else f"not registered; {HOOK_MISSING}"
    versions = {}
    for name in ("torch", "torchvision", "open_clip"):
        if imports.get(name) == "ok":
            versions[name] = getattr(sys.modules[name], "__version__", "?")
    emit({"imports": imports, "checks": checks, "versions": versions, "python": platform.python_version()})


def machine(args):
    import open_clip
    import torchvision

    info = {"date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"), "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "open_clip": open_clip.__version__,
            "cuda": torch.version.cuda, "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2 ** 30, 1),
                    capability=f"{properties.major}.{properties.minor}", bf16=torch.cuda.is_bf16_supported())
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            info["driver"] = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            info["driver"] = None
    emit(info)


# ----------------------------------------------------------------------------- the training step
def train_step(args):
    from train_step import compare

    configs = [{"compile": mode} for mode in args.compile]
    for record in compare(args.model, args.batch, torch.device(args.device), configs, steps=args.steps,
                          warmup=args.warmup, bma_repeats=args.bma_repeats):
        fallbacks = _fallback_warnings(record.get("warnings", []))
        if fallbacks and record.get("learner_kwargs", {}).get("compile") != "off":
            record["compile_fell_back"] = fallbacks[0]  # its figures are the uncompiled step's
        emit(record)


# ----------------------------------------------------------------------------- CUDA branches
class CheckFailed(Exception):
    pass


def _require(condition, message):
    if not condition:
        raise CheckFailed(message)


class _Tiny:
    """clipood-tiny learners built from one seed (same seed, same initial weights) and one fixed batch on the CPU,
    as a data loader hands it over."""

    def __init__(self, device):
        from train_step import CLASS_NAMES
        self.device, self.class_names = device, CLASS_NAMES
        generator = torch.Generator().manual_seed(1)
        self.batch = (torch.randn(16, 3, 32, 32, generator=generator),
                      torch.randint(0, len(CLASS_NAMES), (16,), generator=generator))

    def learner(self, **settings):
        from clipood_plugin import CLIPoodLearner
        torch.manual_seed(0)
        return CLIPoodLearner(model_name="clipood-tiny", pretrained=None, class_names=self.class_names,
                              total_steps=8, lr=1e-3, device=self.device, **settings)

    def train(self, learner, steps=3):
        """Losses of ``steps`` updates and the messages of the warnings raised meanwhile."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            losses = [learner.update(*self.batch)["loss"] for _ in range(steps)]
        _require(all(math.isfinite(loss) for loss in losses), f"non-finite losses {losses}")
        return losses, [str(w.message) for w in caught]


def _weights(module):
    return [p.detach().clone() for p in module.parameters()]


def _check_trained(learner, before):
    """Weights moved, and stayed fp32 (the master weights)."""
    after = list(learner.image_encoder.parameters())
    dtypes = sorted({str(p.dtype) for p in after})
    _require(dtypes == ["torch.float32"], f"the trained weights are {dtypes}, not float32")
    _require(any(not a.equal(b) for a, b in zip(after, before)), "the updates left every weight unchanged")


def _first_layer(encoder):
    return next(m for m in encoder.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def _close(losses, reference, rtol):
    return all(abs(a - b) <= rtol * abs(b) + 1e-4 for a, b in zip(losses, reference))


def _fallback_warnings(messages):
    return [m for m in messages if "torch.compile" in m and "failed" in m]


def check_autocast(tiny, precision, dtype_name):
    learner = tiny.learner(precision=precision, compile="off")
    seen = []
    handle = _first_layer(learner.image_encoder).register_forward_hook(lambda m, i, out: seen.append(str(out.dtype)))
    before = _weights(learner.image_encoder)
    losses, _ = tiny.train(learner)
    handle.remove()
    _require(seen and set(seen) == {f"torch.{dtype_name}"}, f"layer outputs were {sorted(set(seen))} under "
                                                             f"precision {precision}, not {dtype_name}")
    _check_trained(learner, before)
    return {"activation_dtype": dtype_name, "losses": losses}


def check_grad_scaler(tiny):
    """amp-fp16 scales the loss: the gradient reaching a weight in backward is the scale times the one of an fp32
    step from the same weights and batch. A step whose gradients overflow is skipped (weights unchanged) and the
    scale lowered: the first finite one is compared."""
    def gradient_norms(learner, steps):
        norms, scales = [], []
        handle = _first_layer(learner.image_encoder).weight.register_hook(
            lambda grad: norms.append(float(grad.float().norm())))
        for _ in range(steps):
            scales.append(learner.training_step.scaler.get_scale())
            tiny.train(learner, steps=1)
            if math.isfinite(norms[-1]):
                break
        handle.remove()
        return norms, scales

    fp16 = tiny.learner(precision="amp-fp16", compile="off")
    _require(fp16.training_step.scaler.is_enabled(), "the GradScaler is not enabled under amp-fp16")
    before = _weights(fp16.image_encoder)
    norms, scales = gradient_norms(fp16, 4)
    (plain,), _ = gradient_norms(tiny.learner(precision="fp32", compile="off"), 1)
    _require(math.isfinite(norms[-1]), f"every amp-fp16 gradient overflowed at scales {scales}")
    _check_trained(fp16, before)
    ratio = norms[-1] / plain
    _require(abs(ratio / scales[-1] - 1) < 0.05, f"the gradient under amp-fp16 is {ratio:.4g} times the fp32 one, "
                                                 f"not the scale {scales[-1]:g}")
    return {"scales": scales, "scaled_over_fp32_gradient": round(ratio, 1), "skipped_steps": len(norms) - 1}


def check_fused_adamw(tiny):
    learner = tiny.learner(compile="off")
    _require(learner.optimizer.defaults.get("fused") is True, "AdamW is not the fused implementation")
    before = _weights(learner.image_encoder)
    tiny.train(learner, steps=1)
    _check_trained(learner, before)
    state = learner.optimizer.state[next(learner.image_encoder.parameters())]
    _require(state["exp_avg"].device.type == tiny.device.type, f"AdamW state on {state['exp_avg'].device}")
    return {"fused": True, "state_device": str(state["exp_avg"].device)}


def _activities(device):
    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])


def _graph_launches(learner, batch):
    """cudaGraphLaunch calls in one more update (what CUDA graphs replay through)."""
    with profile(activities=_activities(learner.device)) as prof:
        learner.update(*batch)
    return sum("GraphLaunch" in event.name for event in prof.events())


def check_compile(tiny, mode):
    """The compiled step (mode "on" or "reduce-overhead") trains as the uncompiled one does, without falling back."""
    reference, _ = tiny.train(tiny.learner(compile="off"))
    torch._dynamo.reset()
    learner = tiny.learner(compile=mode)
    before = _weights(learner.image_encoder)
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    start = time.perf_counter()
    losses, messages = tiny.train(learner)
    seconds = time.perf_counter() - start
    fallbacks = _fallback_warnings(messages)
    if fallbacks:
        raise CheckFailed(f"compile={mode} fell back to the uncompiled step: {fallbacks[0][:500]}")
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before
    _require(graphs > 0, "torch.compile made no graph")
    _check_trained(learner, before)
    _require(_close(losses, reference, 0.05), f"compiled losses {losses} differ from uncompiled {reference}")
    figures = {"losses": losses, "uncompiled_losses": reference, "first_3_updates_s": round(seconds, 2),
               "graphs": graphs}
    launches = _graph_launches(learner, tiny.batch)
    if mode == "reduce-overhead":
        _require(launches > 0, "no CUDA graph was launched in a step")
    else:
        _require(launches == 0, f"{launches} CUDA graph launches without reduce-overhead")
    figures["graph_launches_per_step"] = launches
    return figures


def check_compile_fallback(tiny):
    """A compiler that fails at the first step: the learner warns, drops compilation and trains as uncompiled."""
    def failing_backend(graph_module, example_inputs):
        raise RuntimeError("forced compiler failure (acceptance check)")

    reference, _ = tiny.train(tiny.learner(compile="off"))
    torch._dynamo.reset()
    original = torch.compile
    torch.compile = lambda model, **options: original(model, backend=failing_backend)
    try:
        learner = tiny.learner(compile="on")
    finally:
        torch.compile = original
    before = _weights(learner.image_encoder)
    losses, messages = tiny.train(learner)
    fallbacks = [m for m in _fallback_warnings(messages) if "forced compiler failure" in m]
    _require(fallbacks, f"no warning of the forced compile failure; warnings: {messages[:3]}")
    _check_trained(learner, before)
    _require(_close(losses, reference, 1e-3), f"losses after the fallback {losses} differ from uncompiled {reference}")
    return {"losses": losses, "warning": fallbacks[0][:300]}


def _paper_transform(size):
    from torchvision import transforms

    from clipood_plugin import CLIP_MEAN, CLIP_STD
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(0.7, 1.0), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(CLIP_MEAN, CLIP_STD)])


def _jpeg_items(root, images):
    from end_to_end import make_jpeg_dataset

    make_jpeg_dataset(root, 1, 1, images, 256)
    return [(str(path), 0) for path in sorted(Path(root).rglob("*.jpg"))]


def check_nvjpeg(tiny, root):
    """A batch of JPEGs decoded and augmented on the GPU (nvJPEG) matches the same crops decoded on the CPU."""
    from clipood_plugin import CLIP_STD
    from clipood_plugin.device_decoding import DeviceAugmentation, EncodedBatch, EncodedImageList

    augmentation = DeviceAugmentation(_paper_transform(224))
    dataset = EncodedImageList(_jpeg_items(root, 36), augmentation)
    torch.manual_seed(0)
    batch = EncodedBatch.collate([dataset[i] for i in range(len(dataset))])
    _require(all(batch.encoded), "the loader decoded some JPEGs itself instead of leaving them to the device")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        on_device = augmentation(batch, tiny.device)
        synchronize(tiny.device)
        start = time.perf_counter()
        augmentation(batch, tiny.device)
        synchronize(tiny.device)
        seconds = time.perf_counter() - start
    fell_back = [str(w.message) for w in caught if "decoding JPEGs on" in str(w.message)]
    _require(not fell_back, f"the device decoder refused the JPEGs: {fell_back[:1]}")
    _require(on_device.device.type == tiny.device.type, f"decoded images are on {on_device.device}")
    on_cpu = augmentation(batch, torch.device("cpu"))
    levels = (on_device.cpu() - on_cpu).abs() * torch.tensor(CLIP_STD).view(1, 3, 1, 1) * 255
    mean_level = float(levels.mean())
    _require(mean_level < 4, f"device-decoded images differ from the CPU's by {mean_level:.2f} pixel levels on average")
    return {"images": len(dataset), "mean_level_difference": round(mean_level, 3),
            "max_level_difference": round(float(levels.max()), 1), "decode_augment_ms": round(1e3 * seconds, 2)}


def check_pinned_transfer(tiny, root):
    """The batches of `clipood train`'s loop (decode cpu) come in pinned memory, so that their copy to the GPU
    (non_blocking) overlaps the step; and the copy is exact."""
    from clipood_plugin.batch_stream import training_batches

    items = _jpeg_items(root, 8)
    batches = training_batches([items, items], _paper_transform(32), 4, seed=0, workers=1, device=tiny.device)
    images, labels = next(batches)
    batches.close()
    copied = images.to(tiny.device, non_blocking=True)
    synchronize(tiny.device)
    _require(torch.equal(copied.cpu(), images), "the non_blocking copy to the device differs from the batch")
    _require(images.is_pinned(), "the training batches (clipood_plugin.batch_stream.training_batches, decode cpu) are "
                                 "in pageable memory, so their copy to the GPU cannot overlap the step (the loaders "
                                 "pin each domain's batch; concatenating them makes a new, unpinned tensor)")
    return {"pinned": True, "batch": list(images.shape)}


def cuda_branches(args):
    device = torch.device(args.device)
    tiny = _Tiny(device)
    with tempfile.TemporaryDirectory(prefix="clipood_branches_") as root:
        checks = {
            "autocast-bf16": lambda: check_autocast(tiny, "amp-bf16", "bfloat16"),
            "autocast-fp16": lambda: check_autocast(tiny, "amp-fp16", "float16"),
            "grad-scaler": lambda: check_grad_scaler(tiny),
            "fused-adamw": lambda: check_fused_adamw(tiny),
            "compile": lambda: check_compile(tiny, "on"),
            "compile-cuda-graphs": lambda: check_compile(tiny, "reduce-overhead"),
            "compile-fallback": lambda: check_compile_fallback(tiny),
            "nvjpeg-decode": lambda: check_nvjpeg(tiny, os.path.join(root, "nvjpeg")),
            "pinned-transfer": lambda: check_pinned_transfer(tiny, os.path.join(root, "pinned")),
        }
        for name in args.only or checks:
            log(f"check {name}")
            start = time.perf_counter()
            try:
                record = {"check": name, "status": "pass", **checks[name]()}
            except Exception as error:  # each check reports its own failure; the next one still runs
                where = traceback.extract_tb(error.__traceback__)[-1]
                record = {"check": name, "status": "fail", "error": f"{type(error).__name__}: {str(error)[:1500]} "
                                                                    f"({Path(where.filename).name}:{where.lineno})"}
            record["seconds"] = round(time.perf_counter() - start, 2)
            emit(record)
            torch._dynamo.reset()


# ----------------------------------------------------------------------------- generated data
def make_jpegs(args):
    from end_to_end import make_jpeg_dataset

    make_jpeg_dataset(args.root, args.domains, args.classes, args.images_per_class, 256)
    emit({"root": args.root, "images": args.domains * args.classes * args.images_per_class})


def make_pacs(args):
    """Photo-like JPEGs as PACS in both frameworks' layouts: DomainBed's ROOT/PACS/<domain>/<class>/ and Dassl's
    ROOT/pacs/images/<domain>/<class>/ with its split files (the first ``train`` images of each class for training,
    the rest cross-validation; 1-based labels)."""
    from end_to_end import make_jpeg_dataset
    from train_step import CLASS_NAMES

    root = Path(args.root)
    images = root / "pacs" / "images"
    make_jpeg_dataset(root / "generated", len(PACS_DOMAINS), len(CLASS_NAMES), args.images_per_class, 256)
    (root / "pacs" / "splits").mkdir(parents=True)
    for d, domain in enumerate(PACS_DOMAINS):
        splits = {"train": [], "crossval": []}
        for c, name in enumerate(CLASS_NAMES):
            (images / domain).mkdir(parents=True, exist_ok=True)
            (root / "generated" / f"domain{d}" / f"class{c}").rename(images / domain / name)
            for i, path in enumerate(sorted((images / domain / name).iterdir())):
                split = "train" if i < args.train else "crossval"
                splits[split].append(f"{domain}/{name}/{path.name} {c + 1}\n")
        for split, lines in splits.items():
            (root / "pacs" / "splits" / f"{domain}_{split}_kfold.txt").write_text("".join(lines))
    shutil.rmtree(root / "generated")  # the emptied domain folders
    (root / "PACS").symlink_to(images, target_is_directory=True)
    emit({"root": str(root), "images": len(PACS_DOMAINS) * len(CLASS_NAMES) * args.images_per_class})


# ----------------------------------------------------------------------------- DomainBed's own tests
def domainbed_test_models(args):
    """DomainBed's domainbed/test/test_models.py, unmodified, on the CLIP algorithms: its test is parameterized over
    algorithms.ALGORITHMS when the module is loaded, so the list is narrowed to them first (the others build
    ImageNet ResNets, whose weights a machine without network cannot fetch)."""
    from domainbed import algorithms
    from domainbed.test import helpers

    missing = [name for name in CLIP_ALGORITHMS if name not in algorithms.ALGORITHMS]
    if missing:
        emit({"error": f"{missing} not in DomainBed's ALGORITHMS: {HOOK_MISSING}"})
        return
    algorithms.ALGORITHMS = [name for name in algorithms.ALGORITHMS if name in CLIP_ALGORITHMS]
    suite = unittest.defaultTestLoader.loadTestsFromName("domainbed.test.test_models")
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(suite)
    emit({"tests_run": result.testsRun, "expected": len(helpers.DEBUG_DATASETS) * len(CLIP_ALGORITHMS),
          "failures": [f"{test.id()}: {text[-600:]}" for test, text in result.failures + result.errors]})


# ----------------------------------------------------------------------------- profiles
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
LAUNCH_CALLS = ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernelExC", "cudaGraphLaunch")


def _union_length(intervals):
    total, end = 0.0, -math.inf
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def profile_summary(events):
    """Per profiled step (the profiler's ProfilerStep ranges): wall time, time the device ran kernels (the union of
    device events), the gaps between them, host syncs (``.item()`` and the like: aten::_local_scalar_dense) and
    synchronizing runtime calls, kernel launches, and the kernels taking the most device time."""
    steps = [(e.time_range.start, e.time_range.end) for e in events if e.name.startswith("ProfilerStep")]
    if not steps:
        raise ValueError("no ProfilerStep ranges in the profile: call prof.step() after each step")
    device = [e for e in events if e.device_type != DeviceType.CPU]
    busy = sum(_union_length([(max(e.time_range.start, a), min(e.time_range.end, b)) for e in device
                              if e.time_range.end > a and e.time_range.start < b]) for a, b in steps)
    wall = sum(b - a for a, b in steps)

    def inside(event):
        return any(a <= event.time_range.start < b for a, b in steps)

    cpu = [e for e in events if e.device_type == DeviceType.CPU and inside(e)]
    syncs = [e for e in cpu if e.name in SYNC_CALLS]
    kernel_time = {}
    for e in device:
        if inside(e):
            kernel_time[e.name] = kernel_time.get(e.name, 0.0) + e.time_range.elapsed_us()
    n = len(steps)
    return {
        "steps": n, "step_ms": round(wall / n / 1e3, 3), "device_busy_ms": round(busy / n / 1e3, 3),
        "gap_ms": round((wall - busy) / n / 1e3, 3), "device_busy_share": round(busy / wall, 3),
        "host_syncs_per_step": sum(e.name == "aten::_local_scalar_dense" for e in cpu) / n,
        "sync_calls_per_step": {name: sum(e.name == name for e in syncs) / n for name in SYNC_CALLS
                                if any(e.name == name for e in syncs)},
        "sync_wait_ms_per_step": round(sum(e.time_range.elapsed_us() for e in syncs) / n / 1e3, 3),
        "launches_per_step": sum(e.name in LAUNCH_CALLS for e in cpu) / n,
        "top_kernels_ms_per_step": {name: round(t / n / 1e3, 3) for name, t in
                                    sorted(kernel_time.items(), key=lambda kv: -kv[1])[:10]},
    }


def _profiler(device, wait, active):
    return profile(activities=_activities(device), schedule=schedule(wait=wait, warmup=1, active=active, repeat=1))


def _write_profile(prof, device, title, table_path):
    summary = profile_summary(prof.events())
    sort_by = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    if table_path:
        with open(table_path, "a") as table:
            table.write(f"== {title}\n{json.dumps(summary, indent=1)}\n")
            table.write(prof.key_averages().table(sort_by=sort_by, row_limit=25) + "\n")
    emit({"profile": title, **summary})


def profile_step(args):
    from train_step import CLASS_NAMES, build

    device = torch.device(args.device)
    total = args.warmup + 1 + args.steps
    step, _, info = build("clipood", args.model, total, device, {"compile": args.compile})
    images = torch.randn(args.batch, 3, info["image_size"], info["image_size"], device=device)
    labels = torch.randint(0, len(CLASS_NAMES), (args.batch,), device=device)
    with _profiler(device, args.warmup, args.steps) as prof:
        for _ in range(total):
            step(images, labels)
            prof.step()
    _write_profile(prof, device, f"training step: {args.model}, batch {args.batch}, compile {args.compile}, "
                                 f"{info['precision']}", args.table)


def profile_end_to_end(args):
    import end_to_end

    options = end_to_end.parse_args(["--device", args.device, "--model", args.model, "--batch", str(args.batch),
                                     "--decode", args.decode, "--data-dir", args.data_dir, "--steps",
                                     str(args.steps + 1), "--warmup", str(args.warmup), "--workers", str(args.workers)])
    device = torch.device(args.device)
    with _profiler(device, args.warmup, args.steps) as prof:
        end_to_end.run(options, args.data_dir, device, on_step=prof.step)
    _write_profile(prof, device, f"end to end: {args.model}, batch {args.batch}, decode {args.decode}", args.table)


# ----------------------------------------------------------------------------- command line
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name, function, help_text, device=False, model=False):
        sub = commands.add_parser(name, help=help_text)
        sub.set_defaults(function=function)
        if device:
            sub.add_argument("--device", default="cuda", help="cuda; another device for development")
        if model:
            sub.add_argument("--model", default="ViT-B-16", help="open_clip model name or clipood-tiny")
        return sub

    sub = command("probe", probe, "imports and registrations")
    sub.add_argument("--domainbed", action="store_true", help="also DomainBed's modules and the CLIP algorithms")
    sub.add_argument("--dassl", action="store_true", help="also Dassl's modules and the CLIPood trainer")
    command("machine", machine, "GPU, driver and versions")

    sub = command("train-step", train_step, "bench/train_step.py's comparison, one line per case", True, True)
    sub.add_argument("--batch", type=int, nargs="+", default=[36, 256])
    sub.add_argument("--compile", nargs="+", default=["auto", "reduce-overhead", "off"])
    sub.add_argument("--steps", type=int, default=20)
    sub.add_argument("--warmup", type=int, default=5)
    sub.add_argument("--bma-repeats", type=int, default=20)

    sub = command("cuda-branches", cuda_branches, "every CUDA branch of the learner, one line per check", True)
    sub.add_argument("--only", nargs="+", help="these checks only")

    for name, function in (("profile-step", profile_step), ("profile-end-to-end", profile_end_to_end)):
        sub = command(name, function, f"{name.replace('-', ' ')}: torch.profiler summary", True, True)
        sub.add_argument("--batch", type=int, default=36)
        sub.add_argument("--steps", type=int, default=5, help="profiled steps")
        sub.add_argument("--warmup", type=int, default=5, help="steps before profiling")
        sub.add_argument("--table", help="append the summary and the profiler's table to this file")
    sub.add_argument("--data-dir", required=True)
    sub.add_argument("--decode", default="cpu")
    sub.add_argument("--workers", type=int, default=4)
    commands.choices["profile-step"].add_argument("--compile", default="auto")

    sub = command("make-jpegs", make_jpegs, "end_to_end.py's photo-like JPEGs in ROOT/<domain>/<class>/")
    sub.add_argument("root")
    sub.add_argument("--domains", type=int, default=3)
    sub.add_argument("--classes", type=int, default=7)
    sub.add_argument("--images-per-class", type=int, default=40)
    sub = command("make-pacs", make_pacs, "photo-like JPEGs in PACS's layouts for DomainBed and Dassl")
    sub.add_argument("root")
    sub.add_argument("--images-per-class", type=int, default=6)
    sub.add_argument("--train", type=int, default=4, help="images per class in Dassl's train split")
    command("domainbed-test-models", domainbed_test_models, "DomainBed's test_models.py on the CLIP algorithms")
    args = parser.parse_args(argv)
    args.function(args)


if __name__ == "__main__":
    main()

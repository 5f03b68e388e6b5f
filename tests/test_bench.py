"""Smoke tests of the benchmarks (bench/): they run on the CPU with the tiny model and print JSON lines
with the documented keys. Not timed: their figures are measured by running them, never asserted. The GPU
acceptance script runs here as its dry run, its refusal without CUDA, its profile summary and its verdict."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_bench(script, *args, model="clipood-tiny"):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(BENCH / script), "--device", "cpu",
                             *(["--model", model] if model else []), *args],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_train_step_reports_both_variants_and_their_ratios_per_batch():
    lines = run_bench("train_step.py", "--batch", "2", "4", "--steps", "2", "--warmup", "1", "--bma-repeats", "2")
    assert [(r["variant"], r["batch"]) for r in lines] == [
        ("reference", 2), ("clipood", 2), ("clipood/reference", 2),
        ("reference", 4), ("clipood", 4), ("clipood/reference", 4)]
    for case in (r for r in lines if r["variant"] != "clipood/reference"):
        assert all(case[key] > 0 for key in ("img_per_s", "step_ms", "bma_ms")), case
        assert case["peak_mem_gb"] is None  # not tracked on the CPU
        assert case["weights"] == ("fp16" if case["variant"] == "reference" else "fp32")
    for ratio in (r for r in lines if r["variant"] == "clipood/reference"):
        assert ratio["img_per_s_ratio"] > 0 and ratio["bma_speedup"] > 0 and ratio["peak_mem_ratio"] is None


@pytest.mark.parametrize("decode", ["cpu", "device"])
def test_end_to_end_reports_the_step_rate_the_loop_rate_and_the_data_wait(decode):
    lines = run_bench("end_to_end.py", "--batch", "6", "--steps", "2", "--warmup", "1", "--workers", "1",
                      "--classes", "2", "--images-per-class", "3", "--image-size", "48", "--decode", decode)
    assert [r["variant"] for r in lines] == ["step_only", "end_to_end", "end_to_end/step_only"]
    step_only, end_to_end, ratio = lines
    assert step_only["img_per_s"] > 0 and step_only["step_ms"] > 0
    assert end_to_end["img_per_s"] > 0 and end_to_end["step_ms"] > 0 and 0 < end_to_end["data_wait_share"] < 1
    assert end_to_end["loader_processes"] == 3 and end_to_end["images_in_data"] == 18
    assert end_to_end["decode"] == decode and end_to_end["images_dtype"] == "torch.uint8"
    assert ratio["img_per_s_ratio"] > 0


def test_end_to_end_measures_every_decode_path_and_each_front_ends_loader_cpu_cost_in_one_run():
    lines = run_bench("end_to_end.py", "--batch", "6", "--steps", "1", "--warmup", "1", "--workers", "0",
                      "--classes", "2", "--images-per-class", "3", "--image-size", "48", "--loader-cpu",
                      "--loader-images", "12", "--loader-size", "32", "--loader-rounds", "2", "--decode", "cpu", "per-image", "device")
    loaders = [r for r in lines if r["variant"] == "loader_cpu"]
    front_ends = ["clipood train --decode cpu", "domainbed clip_transforms clipood"]
    front_ends += ["dassl trainer"] if importlib.util.find_spec("dassl") else []  # measured where Dassl is installed
    assert [(r["front_end"], r["pixels"]) for r in loaders] == [(f, p) for f in front_ends for p in ("float32", "uint8")]
    assert all(r["img_per_cpu_s"] > 0 and r["images"] == 12 for r in loaders)
    assert [r["front_end"] for r in lines if r["variant"] == "loader_cpu/uint8_over_float32"] == front_ends
    assert [r["decode"] for r in lines if r["variant"] == "end_to_end"] == ["cpu", "per-image", "device"]
    assert [r["decode"] for r in lines if r["variant"] == "end_to_end/step_only"] == ["cpu", "per-image", "device"]
    assert sum(r["variant"] == "step_only" for r in lines) == 1


def test_batched_input_times_both_device_augmentations_and_says_how_far_apart_they_are():
    lines = run_bench("batched_input.py", "--batch", "2", "3", "--size", "32", "--repeats", "1", model=None)
    assert [r["batch"] for r in lines] == [2, 3]
    for line in lines:
        assert all(line[key] > 0 for key in ("decode_ms", "batched_ms", "per_image_ms"))
        assert 0 <= line["mean_levels_apart"] <= line["max_levels_apart"] <= 1e-3


# ----------------------------------------------------------------------------- bench/gpu_acceptance.py
sys.path.insert(0, str(BENCH))
import gpu_acceptance  # noqa: E402  (bench/ is not a package)

from conftest import domainbed_root  # noqa: E402

DOMAINBED_ROOT = domainbed_root()
DASSL_SPEC = importlib.util.find_spec("dassl")
FRAMEWORKS_READY = (DOMAINBED_ROOT is not None and DASSL_SPEC is not None
                    and (Path(DASSL_SPEC.origin).parents[1] / "tools" / "train.py").is_file()
                    and all(importlib.util.find_spec(name) for name in ("wilds", "parameterized", "yacs")))


def acceptance(*args, **env):
    environment = {**os.environ, **({"DOMAINBED_ROOT": DOMAINBED_ROOT} if DOMAINBED_ROOT else {}), **env}
    return subprocess.run([sys.executable, str(BENCH / "gpu_acceptance.py"), *map(str, args)], capture_output=True,
                          text=True, env=environment, timeout=300)


@pytest.mark.skipif(not FRAMEWORKS_READY, reason="needs DomainBed (DOMAINBED_ROOT or PYTHONPATH) with wilds and "
                                                 "parameterized, and Dassl installed from a checkout")
def test_acceptance_dry_run_finds_every_part_and_prints_its_commands(tmp_path):
    done = acceptance(tmp_path / "out", "--dry-run")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {name: part["status"] for name, part in results["parts"].items()} == {
        name: "dry-run" for name in gpu_acceptance.PART_NAMES}
    assert Path(results["frameworks"]["DomainBed"], "domainbed", "test", "test_models.py").is_file()
    assert Path(results["frameworks"]["Dassl.pytorch"], "tools", "train.py").is_file()
    assert all(status == "ok" for status in {**results["imports"]["imports"], **results["imports"]["checks"]}.values())
    commands = [c for part in results["parts"].values() for c in part["commands"]]
    assert all(c in done.stdout for c in commands)
    assert sum("-m domainbed.scripts.train" in c and "--algorithm CLIPood" in c for c in commands) == 1
    assert sum("tools/train.py" in c and "--trainer CLIPood" in c and "DECODE device" in c for c in commands) == 2
    for option in ("--decode cpu", "--decode device", "--augmentation domainbed"):
        assert sum("end_to_end.py" in c and option in c for c in commands) == 1
    assert (tmp_path / "out" / "acceptance.log").read_text().count("$ ") == len(commands)


def test_acceptance_dry_run_names_the_frameworks_it_cannot_find(tmp_path):
    empty = tmp_path / "frameworks"
    empty.mkdir()
    done = acceptance(tmp_path / "out", "--dry-run", "--frameworks", empty)
    assert done.returncode == 1
    parts = json.loads((tmp_path / "out" / "results.json").read_text())["parts"]
    for name, framework in (("domainbed_test_models", "DomainBed"), ("domainbed_train", "DomainBed"),
                            ("dassl_train", "Dassl")):
        assert parts[name]["status"] == "skip"
        assert parts[name]["error"].startswith(f"{framework} not found") and str(empty) in parts[name]["error"]
    assert "DomainBed not found: looked for DomainBed/" in done.stdout
    assert all(parts[name]["status"] == "dry-run" for name in ("cuda_branches", "train_step", "end_to_end"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_acceptance_without_cuda_exits_2_with_one_line(tmp_path):
    done = acceptance(tmp_path / "out", "--only", "cuda_branches")
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "a CUDA GPU is needed" in done.stderr


def test_acceptance_branch_checks_that_need_no_gpu_run_on_the_cpu():
    """The GradScaler and fused-AdamW checks reach into the learner: on the CPU device they run the same code, so a
    renamed attribute fails here rather than on a GPU machine (the 2026-12-04 H200 run lost its grad-scaler check
    to learner.scaler, which had moved into learner.training_step)."""
    result = subprocess.run([sys.executable, str(BENCH / "acceptance_checks.py"), "cuda-branches", "--device", "cpu",
                             "--only", "grad-scaler", "fused-adamw"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    records = {record["check"]: record for record in map(json.loads, result.stdout.splitlines())}
    assert {name: record["status"] for name, record in records.items()} == \
        {"grad-scaler": "pass", "fused-adamw": "pass"}, result.stdout + result.stderr[-2000:]
    assert records["grad-scaler"]["scales"][-1] > 1  # the loss was scaled


def test_acceptance_profile_counts_the_host_syncs_of_each_step(tmp_path):
    """The learner's update reads its loss with .item(): at least one host sync per profiled step."""
    result = subprocess.run([sys.executable, str(BENCH / "acceptance_checks.py"), "profile-step", "--device", "cpu",
                             "--model", "clipood-tiny", "--batch", "4", "--steps", "2", "--warmup", "1", "--table",
                             str(tmp_path / "profile.txt")], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    (summary,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert summary["steps"] == 2 and summary["host_syncs_per_step"] >= 1
    assert summary["step_ms"] > 0 and summary["device_busy_ms"] == 0  # no device events on the CPU
    table = (tmp_path / "profile.txt").read_text()  # the summary, then the profiler's own table
    assert table.startswith("== training step: clipood-tiny, batch 4") and "Self CPU time total" in table


def test_acceptance_verdict_picks_the_compile_mode_and_decode_option_and_reads_the_targets_for_them():
    def case(ratio, bma_ms, peak_ratio=1.0, **extra):
        return {"img_per_s_ratio": ratio, "bma_ms": bma_ms, "peak_mem_ratio": peak_ratio, **extra}

    steps = {"batch_36": {"compile_auto": case(6.0, 0.3), "compile_reduce-overhead": case(5.0, 0.2),
                          "compile_off": case(1.1, 0.4)},
             "batch_256": {"compile_auto": case(1.5, 0.3, 1.1, compile_fell_back="torch.compile ... failed"),
                           "compile_reduce-overhead": case(1.2, 0.4, 1.3), "compile_off": case(1.0, 0.4, 0.9)}}
    runs = {"decode_cpu": {"decode": "cpu", "augmentation": "clipood", "ratio_to_step": 0.7, "img_per_s": 1400},
            "decode_device": {"decode": "device", "augmentation": "clipood", "ratio_to_step": 0.95, "img_per_s": 1900},
            "domainbed_augmentation": {"decode": "cpu", "augmentation": "domainbed", "ratio_to_step": 0.35,
                                       "img_per_s": 700}}
    judged = gpu_acceptance.verdict({"train_step": {"figures": {"compare": steps}},
                                     "end_to_end": {"figures": runs}})
    # geometric means: auto sqrt(6.0 * 1.5) = 3.0 but its compile fell back (figures of the uncompiled step):
    # excluded; reduce-overhead sqrt(5.0 * 1.2) = 2.45, off sqrt(1.1 * 1.0) = 1.05
    assert judged["compile_recommended"] == "reduce-overhead"
    assert judged["compile_speedup_geomean"] == pytest.approx({"reduce-overhead": 6 ** 0.5, "off": 1.1 ** 0.5})
    targets = judged["targets"]
    assert (targets["step_batch_36"]["value"], targets["step_batch_36"]["met"]) == (5.0, True)  # >= 3
    assert (targets["step_batch_256"]["value"], targets["step_batch_256"]["met"]) == (1.2, False)  # < 1.4
    assert targets["bma_update_ms"]["value"] == pytest.approx(0.3) and targets["bma_update_ms"]["met"]  # median 0.2, 0.4
    assert (targets["peak_memory_256"]["value"], targets["peak_memory_256"]["met"]) == (1.3, False)  # > 1.2
    assert judged["decode_recommended"] == "device"
    assert (targets["end_to_end_36"]["value"], targets["end_to_end_36"]["met"]) == (0.95, True)  # >= 0.9
    assert judged["missed"] == ["step_batch_256", "peak_memory_256"] and judged["not_measured"] == []
    assert judged["domainbed_pipeline"]["relative_to_clipood_augmentation"] == pytest.approx(700 / 1400, abs=1e-3)

"""Smoke tests of the benchmarks (bench/): they run on the CPU with the tiny model and print JSON lines
with the documented keys. Not timed: their figures are measured by running them, never asserted."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_bench(script, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(BENCH / script), "--device", "cpu", "--model", "clipood-tiny", *args],
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
    assert end_to_end["decode"] == decode
    assert ratio["img_per_s_ratio"] > 0

"""Helpers shared by the benchmarks: device handling, timing that waits for the device, JSON lines."""
import json
import sys
import time

import torch


def resolve_device(name):
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is visible to torch; run with --device cpu")
    return device


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats, device):
    """Mean seconds per call of ``fn()`` over ``repeats`` calls, device work included."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def reset_peak_memory(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device):
    """Peak allocated device memory since the last reset; None on the CPU (not tracked by torch)."""
    return round(torch.cuda.max_memory_allocated(device) / 1e9, 3) if device.type == "cuda" else None


def emit(record):
    """One JSON line on stdout (progress and library chatter go to stderr)."""
    print(json.dumps(record), flush=True)


def log(message):
    print(message, file=sys.stderr, flush=True)

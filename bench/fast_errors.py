"""How long `clipood train` takes to refuse what needs no model: a CUDA device where there is none (on a
machine without a GPU), an output
folder in use or holding a finished run, a data dir without domain folders, a weights file that is not there,
and an open_clip tag whose weights are neither cached nor downloadable. Each is one fresh process, as a user
runs it; the figure is its wall time to the refusal.

    python bench/fast_errors.py [--repeats 3]

The first five are refused before torch is imported; a tag's weights are looked up in open_clip's registry,
so that refusal waits for open_clip (and torch) to import.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clipood_plugin.cuda_driver import cuda_device_count
from clipood_plugin.files import claim_output_dir
from clipood_plugin.synthetic import make_demo_dataset


def clipood_train(data_dir, out, *extra):
    argv = [sys.executable, "-m", "clipood_plugin", "train", "--data-dir", str(data_dir), "--test-domains", "sketch",
            "--output-dir", str(out), *map(str, extra)]
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    if result.returncode != 2:
        sys.exit(f"expected a refusal (exit 2) from {' '.join(argv)}, got {result.returncode}: {result.stderr}")
    return seconds, result.stderr.strip().splitlines()[-1]


def cases(root):
    data = make_demo_dataset(root / "data", images_per_class=2)
    tiny = ("--model", "clipood-tiny", "--pretrained", "none")
    (root / "finished").mkdir()
    (root / "finished" / "results.json").write_text("{}")
    (root / "flat").mkdir()
    if not cuda_device_count():
        yield "device cuda", lambda: clipood_train(data, root / "a", *tiny, "--device", "cuda")
    with claim_output_dir(root / "busy"):
        yield "output folder in use", lambda: clipood_train(data, root / "busy", *tiny)
    yield "finished run in the folder", lambda: clipood_train(data, root / "finished", *tiny)
    yield "no domain folders", lambda: clipood_train(root / "flat", root / "b", *tiny)
    yield "weights file missing", lambda: clipood_train(data, root / "c", "--model", "clipood-tiny", "--pretrained",
                                                        root / "missing.pt")
    yield "tag weights unreachable", lambda: clipood_train(data, root / "d", "--model", "ViT-B-16",
                                                           "--pretrained", "openai")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for name, refuse in cases(Path(folder)):
            runs = [refuse() for _ in range(args.repeats)]
            print(json.dumps({"case": name, "median_s": round(statistics.median(s for s, _ in runs), 2),
                              "message": runs[0][1][:160]}), flush=True)


if __name__ == "__main__":
    main()

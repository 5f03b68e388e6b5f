"""End-to-end benchmark: a `clipood train`-style loop reading JPEG files, against the pure step rate.

    python bench/end_to_end.py --device cuda --model ViT-B-16 --batch 36 --workers 4
    python bench/end_to_end.py --device cpu --model clipood-tiny --batch 6 --steps 3 --workers 1

Generates JPEG files in the DomainBed layout ROOT/<domain>/<class>/<image>.jpg (or reads --data-dir),
then with one learner:
1. step_only: ``learner.update`` on one batch preloaded on the device (the pure step rate);
2. end_to_end: the training loop of ``clipood train`` (clipood_plugin.batch_stream.training_batches): per
   training domain a DataLoader with ``--workers`` processes decoding and augmenting the files, batches of
   ``batch / domains`` per domain concatenated, then ``learner.update``. ``data_wait_share`` is the share of the loop's time
   spent waiting for the next batch; ``update`` ends with a host sync (``loss.item()``), so on a GPU that
   is the time the GPU idles waiting for data. ``--decode device`` decodes and augments on the device
   instead, in a thread one batch ahead (what it has not finished when the step wants it counts as waiting).
Prints one JSON line per phase and one with their ratio.
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from bench_utils import emit, log, resolve_device, synchronize, timed
from clipood_plugin import CLIPoodLearner, IMAGENET_MEAN, IMAGENET_STD
from clipood_plugin.data import scan_domain_folders
from clipood_plugin.settings import DECODE_CHOICES
from clipood_plugin.batch_stream import training_batches


def make_jpeg_dataset(root, domains, classes, images_per_class, size, seed=0):
    """Photo-like JPEGs (smooth color fields plus grain, quality 90): decoding cost like real photos."""
    rng = np.random.default_rng(seed)
    for d in range(domains):
        for c in range(classes):
            folder = Path(root) / f"domain{d}" / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(images_per_class):
                coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize(
                    (size, size), Image.BICUBIC)
                grain = rng.normal(0, 12, (size, size, 3))
                pixels = np.clip(np.asarray(coarse, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)


def domainbed_transform(image_size):
    """DomainBed's training augmentation (domainbed/datasets.py), ImageNet-normalized."""
    return transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=(0.7, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(0.3, 0.3, 0.3, 0.3),
        transforms.RandomGrayscale(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def run(args, root, device, on_step=None):
    """Both phases on the dataset at ``root``; ``on_step()`` (e.g. a profiler's step) after each loop step."""
    dataset = scan_domain_folders(root)
    if len(dataset.domains) < args.domains:
        raise SystemExit(f"{root} has {len(dataset.domains)} domains, fewer than --domains {args.domains}")
    train_domains = dataset.domains[:args.domains]
    per_domain = args.batch // args.domains
    domainbed = args.augmentation == "domainbed"
    norm = dict(input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD) if domainbed else {}
    torch.manual_seed(0)
    learner = CLIPoodLearner(model_name=args.model, pretrained=None, class_names=dataset.class_names,
                             total_steps=2 * (args.warmup + args.steps), device=device, **norm)
    transform = domainbed_transform(learner.image_size) if domainbed else learner.preprocess_train
    common = {"model": args.model, "device": device.type, "batch": per_domain * args.domains,
              "steps": args.steps, "precision": learner.precision}

    # 1. the pure step rate, on a batch already on the device
    images = torch.randn(per_domain * args.domains, 3, learner.image_size, learner.image_size, device=device)
    labels = torch.randint(0, len(dataset.class_names), (len(images),), device=device)
    for _ in range(args.warmup):
        learner.update(images, labels)
    step_seconds = timed(lambda: learner.update(images, labels), args.steps, device)
    step_only = {"variant": "step_only", **common, "img_per_s": round(len(images) / step_seconds, 2),
                 "step_ms": round(1e3 * step_seconds, 3)}
    emit(step_only)

    # 2. the training loop of `clipood train`, from the files
    start = time.perf_counter()
    batches = training_batches([dataset.samples[d] for d in train_domains], transform, per_domain, seed=0,
                               workers=args.workers, decode=args.decode, device=device)
    wait = 0.0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:  # workers are up and the first batches done: time from here
            startup_seconds = time.perf_counter() - start
            synchronize(device)
            start, wait = time.perf_counter(), 0.0
        before = time.perf_counter()
        images, labels = next(batches)
        wait += time.perf_counter() - before
        learner.update(images, labels)
        if on_step is not None:
            on_step()
    synchronize(device)
    seconds = (time.perf_counter() - start) / args.steps
    end_to_end = {"variant": "end_to_end", **common, "img_per_s": round(len(images) / seconds, 2),
                  "step_ms": round(1e3 * seconds, 3), "data_wait_share": round(wait / (seconds * args.steps), 4),
                  "workers_per_domain": args.workers, "loader_processes": args.workers * args.domains,
                  "augmentation": args.augmentation, "decode": args.decode, "warmup_s": round(startup_seconds, 3),
                  "images_in_data": sum(len(dataset.samples[d]) for d in train_domains)}
    emit(end_to_end)
    emit({"variant": "end_to_end/step_only", **common,
          "img_per_s_ratio": round(end_to_end["img_per_s"] / step_only["img_per_s"], 3)})


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="ViT-B-16", help="open_clip model name or clipood-tiny (random init)")
    parser.add_argument("--batch", type=int, default=36, help="images per step, split evenly over the domains")
    parser.add_argument("--domains", type=int, default=3, help="training domains (the paper: 3, 12 images each)")
    parser.add_argument("--workers", type=int, default=4,
                        help="loader processes per domain, as `clipood train --workers`")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per phase")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each phase")
    parser.add_argument("--augmentation", choices=("clipood", "domainbed"), default="clipood",
                        help="clipood: crop + flip (the paper, `clipood train`); domainbed: adds color jitter and "
                             "grayscale, ImageNet normalization (DomainBed's train.py)")
    parser.add_argument("--decode", choices=DECODE_CHOICES, default="cpu",
                        help="cpu: the loader processes decode and augment with PIL; device: they only read the "
                             "files and the training device decodes (nvJPEG on CUDA) and augments each batch, as "
                             "`clipood train --decode device`")
    parser.add_argument("--data-dir", help="an existing ROOT/<domain>/<class>/<image> dataset (e.g. PACS) to read "
                                           "instead of generated JPEGs; its first --domains domains are used")
    parser.add_argument("--classes", type=int, default=7, help="classes of the generated data")
    parser.add_argument("--images-per-class", type=int, default=40, help="per domain, generated data")
    parser.add_argument("--image-size", type=int, default=256, help="side of the generated JPEGs in pixels")
    args = parser.parse_args(argv)
    if args.batch < args.domains or args.batch % args.domains:
        parser.error(f"--batch {args.batch} must be a positive multiple of --domains {args.domains}")
    if args.decode == "device" and args.augmentation == "domainbed":
        parser.error("--decode device runs the paper's augmentation only (crop, flip); DomainBed's adds color "
                     "jitter and grayscale: use --decode cpu with --augmentation domainbed")
    if args.steps < 1 or args.warmup < 1 or args.workers < 0:
        parser.error("--steps and --warmup must be at least 1, --workers at least 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    if args.data_dir:
        run(args, args.data_dir, device)
        return
    with tempfile.TemporaryDirectory(prefix="clipood_bench_") as root:
        log(f"writing {args.domains * args.classes * args.images_per_class} JPEGs of {args.image_size}px to {root}")
        make_jpeg_dataset(root, args.domains, args.classes, args.images_per_class, args.image_size)
        run(args, root, device)


if __name__ == "__main__":
    main()

"""End-to-end benchmark: a `clipood train`-style loop reading JPEG files, against the pure step rate, and the
CPU cost of each front end's image loading.

    python bench/end_to_end.py --device cuda --model ViT-B-16 --batch 36 --workers 4 --decode cpu per-image device
    python bench/end_to_end.py --device cpu --model clipood-tiny --batch 6 --steps 3 --workers 1 --loader-cpu

Generates JPEG files in the DomainBed layout ROOT/<domain>/<class>/<image>.jpg (or reads --data-dir),
then with one learner:
1. step_only: ``learner.update`` on one batch preloaded on the device (the pure step rate, the upper bound of a
   loop that decodes nothing);
2. end_to_end, once per ``--decode`` choice: the training loop of ``clipood train``
   (clipood_plugin.batch_stream.training_batches): per training domain a DataLoader with ``--workers`` processes,
   batches of ``batch / domains`` per domain concatenated, then ``learner.update``. ``cpu``: the loader processes
   decode and augment with PIL (``--decode cpu``); ``device``: they only read the files, and the device decodes
   the batch in one call and crops, resizes, flips and normalizes it as one batch on a stream of its own
   (``--decode device``); ``per-image``: the same, but each crop resized alone as before the batched path.
   ``data_wait_share`` is the share of the loop's time spent waiting for the next batch; ``update`` ends with a
   host sync (``loss.item()``), so on a GPU that is the time the GPU idles waiting for data. The ratio line
   divides by the step rate of the same learner, so of the same compile mode.
With ``--loader-cpu``, first, without a learner: images per CPU-second of the image loading of each front end
(`clipood train --decode cpu`, DomainBed with clip_transforms clipood, the Dassl trainer when Dassl is
installed), in this process on one thread, for its float pipeline (PIL's crop and resize, ToTensor, Normalize)
and for the uint8 one it runs now, on the same images with the same crops; medians of rounds that take turns.
Prints one JSON line per measurement, then the table of them on stderr.
"""
import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import datasets, transforms

import bench_utils
from bench_utils import log, resolve_device, synchronize, timed
from clipood_plugin import CLIPoodLearner, IMAGENET_MEAN, IMAGENET_STD
from clipood_plugin.image_transforms import input_transforms, uint8_transform
from clipood_plugin.batch_stream import training_batches
from clipood_plugin.data import ImageList, scan_domain_folders
from clipood_plugin.image_files import image_list
from clipood_plugin.device_decoding import DeviceAugmentation
from clipood_plugin.image_input import IMAGE_NORMS
from clipood_plugin.settings import DECODE_CHOICES
from domainbed_adapter.data import authors_transforms, use_transform

PER_IMAGE = "per-image"
RECORDS = []  # what this run emitted, for the closing table


def emit(record):
    RECORDS.append(record)
    bench_utils.emit(record)


def table(records):
    """The run's measurements as one markdown table."""
    rows = ["| measurement | images/s | data wait share | ratio |", "| --- | --- | --- | --- |"]
    for r in records:
        if r["variant"] == "loader_cpu":
            rows.append(f"| {r['front_end']}, {r['pixels']} (per CPU-second) | {r['img_per_cpu_s']} | | |")
        elif r["variant"] == "loader_cpu/uint8_over_float32":
            rows.append(f"| {r['front_end']}: uint8 / float32 | | | {r['ratio']} |")
        elif r["variant"] == "step_only":
            rows.append(f"| step alone ({r['model']}, batch {r['batch']}, compile {r['compile']}) | {r['img_per_s']} | | |")
        elif r["variant"] == "end_to_end":
            rows.append(f"| end to end, decode {r['decode']} | {r['img_per_s']} | {r['data_wait_share']} | |")
        else:
            rows.append(f"| end to end, decode {r['decode']} / step alone | | | {r['img_per_s_ratio']} |")
    return "\n".join(rows)


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


class PerImageAugmentation(DeviceAugmentation):
    """The device path before it was batched: each crop cast and resized alone (F.interpolate), for comparison."""

    def augment(self, images, boxes, flips):
        crops = []
        for image, (top, left, height, width) in zip(images, boxes.tolist()):
            crop = image[None, :, top:top + height, left:left + width].float()
            crops.append(F.interpolate(crop, size=self.size, mode=self.mode, antialias=self.mode != "nearest",
                                       **({} if self.mode == "nearest" else {"align_corners": False})))
        resized = torch.cat(crops)
        return self.finish(torch.where(flips.to(resized.device).view(-1, 1, 1, 1), resized.flip(-1), resized))


def float_pixels(transform, mean, std):
    """The PIL pipeline of ``transform`` (``image_transforms.crop_and_flip_pixels``) as it was before the uint8 inputs:
    RandomResizedCrop and flip on the PIL image, then ToTensor and Normalize."""
    _, crop, flip = transform.transforms
    return transforms.Compose([
        transforms.RandomResizedCrop(crop.size, crop.scale, crop.ratio, crop.interpolation, antialias=True),
        transforms.RandomHorizontalFlip(flip.p), transforms.ToTensor(), transforms.Normalize(mean, std)])


def _dassl_transforms(size):
    """(Dassl's float training transform for CoOp's configs, the uint8 one the CLIPood trainer runs), or None
    without Dassl."""
    try:
        from dassl.config import get_cfg_default
        from dassl.data.transforms import build_transform
    except ImportError:
        return None
    cfg = get_cfg_default()
    cfg.INPUT.SIZE, cfg.INPUT.INTERPOLATION = (size, size), "bicubic"
    cfg.INPUT.TRANSFORMS = ["random_resized_crop", "random_flip", "normalize"]
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = list(IMAGE_NORMS["openai"].mean), list(IMAGE_NORMS["openai"].std)
    with contextlib.redirect_stdout(sys.stderr):  # Dassl lists the transform's steps; stdout holds JSON lines
        dassl = build_transform(cfg, is_train=True)
    return dassl, uint8_transform(dassl)


def loader_cpu_rates(root, domains, args):
    """Images per CPU-second of each front end's image loading (open, decode, augment, batch), its float pipeline
    against its uint8 one, each item with the same seed in both; the median of ``--loader-rounds`` rounds."""
    size = args.loader_size
    image_input = IMAGE_NORMS["openai"].at((size, size))
    mean, std = image_input.mean, image_input.std
    clipood = input_transforms(image_input)[0]
    domainbed = authors_transforms(image_input)[0]
    pipelines = {"clipood train --decode cpu": (float_pixels(clipood, mean, std), clipood),
                 "domainbed clip_transforms clipood": (float_pixels(domainbed, mean, std), domainbed)}
    dassl = _dassl_transforms(size)
    if dassl is None:
        log("Dassl is not installed: its trainer's loading is not measured")
    else:
        pipelines["dassl trainer"] = dassl
    samples = [sample for domain in domains for sample in scan_domain_folders(root).samples[domain]]
    samples = samples[:args.loader_images]
    rates = {(front_end, pixels): [] for front_end in pipelines for pixels in ("float32", "uint8")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker process
    try:
        for _ in range(args.loader_rounds):  # rounds of every case in turn: the load of a shared machine hits all
            for front_end, (before, after) in pipelines.items():
                for pixels, transform in (("float32", before), ("uint8", after)):
                    rates[front_end, pixels].append(_loading_rate(front_end, transform, samples, root, domains, args))
    finally:
        torch.set_num_threads(threads)
    images = (len(samples) // args.batch) * args.batch
    for front_end in pipelines:
        median = {pixels: statistics.median(rates[front_end, pixels]) for pixels in ("float32", "uint8")}
        for pixels in ("float32", "uint8"):
            emit({"variant": "loader_cpu", "front_end": front_end, "pixels": pixels, "image_size": args.loader_size,
                  "images": images, "rounds": args.loader_rounds, "img_per_cpu_s": round(median[pixels], 2)})
        emit({"variant": "loader_cpu/uint8_over_float32", "front_end": front_end,
              "ratio": round(median["uint8"] / median["float32"], 3)})


def _loading_rate(front_end, transform, samples, root, domains, args):
    """Images per CPU-second of this process loading ``samples`` in batches as ``front_end`` does, each item with
    a fixed seed: DomainBed through an ImageFolder environment given ``transform`` by the adapter, the others
    through an ImageList (Dassl's DatasetWrapper does the same work: PIL reads the file, then the transform)."""
    if front_end.startswith("domainbed"):
        dataset = _SeededFolder(root, domains[0])
        use_transform(dataset, transform)
    else:
        dataset = image_list(samples, transform) if front_end.startswith("clipood") else ImageList(samples, transform)
    start = time.process_time()
    for first in range(0, len(samples) - args.batch + 1, args.batch):
        torch.stack([dataset[(i % len(dataset), 7919 * i)][0] for i in range(first, first + args.batch)])
    return (len(samples) // args.batch) * args.batch / (time.process_time() - start)


class _SeededFolder(datasets.ImageFolder):
    """A DomainBed environment (torchvision's ImageFolder, as DomainBed's MultipleEnvironmentImageFolder builds
    it) whose item (index, seed) fixes the augmentation's random draws."""

    def __init__(self, root, domain):
        super().__init__(str(Path(root) / domain))

    def __getitem__(self, index):
        index, seed = index
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # as ImageList seeds its items
            return super().__getitem__(index)


def run(args, root, device, on_step=None):
    """The phases on the dataset at ``root``; ``on_step()`` (e.g. a profiler's step) after each loop step."""
    dataset = scan_domain_folders(root)
    if len(dataset.domains) < args.domains:
        raise SystemExit(f"{root} has {len(dataset.domains)} domains, fewer than --domains {args.domains}")
    train_domains = dataset.domains[:args.domains]
    if args.loader_cpu:
        loader_cpu_rates(root, train_domains, args)
    per_domain = args.batch // args.domains
    domainbed = args.augmentation == "domainbed"
    norm = dict(input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD) if domainbed else {}
    torch.manual_seed(0)
    learner = CLIPoodLearner(model_name=args.model, pretrained=None, class_names=dataset.class_names,
                             total_steps=len(args.decode) * (args.warmup + args.steps) + args.warmup + args.steps,
                             device=device, **norm)
    transform = domainbed_transform(learner.image_size) if domainbed else learner.preprocess_train
    common = {"model": args.model, "device": device.type, "batch": per_domain * args.domains,
              "steps": args.steps, "precision": learner.precision, "compile": learner.config["compile"]}

    # 1. the pure step rate, on a batch already on the device
    images = torch.randn(per_domain * args.domains, 3, learner.image_size, learner.image_size, device=device)
    labels = torch.randint(0, len(dataset.class_names), (len(images),), device=device)
    for _ in range(args.warmup):
        learner.update(images, labels)
    step_seconds = timed(lambda: learner.update(images, labels), args.steps, device)
    step_only = {"variant": "step_only", **common, "img_per_s": round(len(images) / step_seconds, 2),
                 "step_ms": round(1e3 * step_seconds, 3)}
    emit(step_only)

    # 2. the training loop of `clipood train`, from the files, per decode choice
    for decode in args.decode:
        loop_transform = PerImageAugmentation(transform) if decode == PER_IMAGE else transform
        start = time.perf_counter()
        batches = training_batches([dataset.samples[d] for d in train_domains], loop_transform, per_domain, seed=0,
                                   workers=args.workers, decode="device" if decode == PER_IMAGE else decode,
                                   device=device)
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
        batches.close()
        seconds = (time.perf_counter() - start) / args.steps
        end_to_end = {"variant": "end_to_end", **common, "img_per_s": round(len(images) / seconds, 2),
                      "step_ms": round(1e3 * seconds, 3), "data_wait_share": round(wait / (seconds * args.steps), 4),
                      "workers_per_domain": args.workers, "loader_processes": args.workers * args.domains,
                      "augmentation": args.augmentation, "decode": decode, "images_dtype": str(images.dtype),
                      "warmup_s": round(startup_seconds, 3),
                      "images_in_data": sum(len(dataset.samples[d]) for d in train_domains)}
        emit(end_to_end)
        emit({"variant": "end_to_end/step_only", **common, "decode": decode,
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
    parser.add_argument("--decode", nargs="+", choices=(*DECODE_CHOICES, PER_IMAGE), default=["cpu"],
                        help="one loop per choice: cpu: the loader processes decode and augment with PIL; device: "
                             "they only read the files and the training device decodes (nvJPEG on CUDA) and augments "
                             "each batch, as `clipood train --decode device`; per-image: device, each crop resized "
                             "alone (the path before the batched one)")
    parser.add_argument("--loader-cpu", action="store_true",
                        help="first measure each front end's image loading in images per CPU-second, float32 against "
                             "uint8 pipeline (no learner, no device)")
    parser.add_argument("--loader-images", type=int, default=240, help="images per --loader-cpu measurement")
    parser.add_argument("--loader-size", type=int, default=224, help="crop size of the --loader-cpu pipelines")
    parser.add_argument("--loader-rounds", type=int, default=5, help="--loader-cpu rounds; each figure is their median")
    parser.add_argument("--data-dir", help="an existing ROOT/<domain>/<class>/<image> dataset (e.g. PACS) to read "
                                           "instead of generated JPEGs; its first --domains domains are used")
    parser.add_argument("--classes", type=int, default=7, help="classes of the generated data")
    parser.add_argument("--images-per-class", type=int, default=40, help="per domain, generated data")
    parser.add_argument("--image-size", type=int, default=256, help="side of the generated JPEGs in pixels")
    args = parser.parse_args(argv)
    if args.batch < args.domains or args.batch % args.domains:
        parser.error(f"--batch {args.batch} must be a positive multiple of --domains {args.domains}")
    if args.augmentation == "domainbed" and set(args.decode) - {"cpu"}:
        parser.error("--decode device and per-image run the paper's augmentation only (crop, flip); DomainBed's adds "
                     "color jitter and grayscale: use --decode cpu with --augmentation domainbed")
    if args.steps < 1 or args.warmup < 1 or args.workers < 0 or args.loader_images < args.batch:
        parser.error("--steps and --warmup must be at least 1, --workers at least 0, --loader-images at least --batch")
    return args


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    if args.data_dir:
        run(args, args.data_dir, device)
    else:
        with tempfile.TemporaryDirectory(prefix="clipood_bench_") as root:
            log(f"writing {args.domains * args.classes * args.images_per_class} JPEGs of {args.image_size}px to {root}")
            make_jpeg_dataset(root, args.domains, args.classes, args.images_per_class, args.image_size)
            run(args, root, device)
    log(table(RECORDS))


if __name__ == "__main__":
    main()

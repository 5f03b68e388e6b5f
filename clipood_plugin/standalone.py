"""`clipood train`: CLIPood on a ROOT/<domain>/<class>/<image> folder dataset, leave-domains-out."""
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from . import distributed
from .averaging import AVERAGING_CHOICES
from .data import DataError, ImageList, StepBatchSampler, scan_domain_folders, split_holdout
from .device_decoding import DECODE_CHOICES, DeviceAugmentation, EncodedBatch, EncodedImageList, decoded_ahead
from .heads import HEAD_CHOICES
from .learner import COMPILE_CHOICES, PRECISION_CHOICES, CLIPoodLearner
from .loss import MARGIN_KINDS


@dataclass
class TrainConfig:
    """Defaults are the paper's domain-shift settings (PACS: lr 5e-6, 10 epochs x 500 iterations)."""
    data_dir: str = field(default=None, metadata={"help": "ROOT of ROOT/<domain>/<class>/<image>"})
    test_domains: list = field(default=None, metadata={"help": "domain folder name(s) held out for testing"})
    output_dir: str = field(default="./clipood_output", metadata={"help": "results.json, results.png, model.pt, checkpoint.pt"})
    model: str = field(default="ViT-B-16", metadata={"help": "open_clip model name, CoOp-style name, or clipood-tiny"})
    pretrained: str = field(default="openai", metadata={"help": "open_clip tag, local checkpoint file, or 'none' (random init)"})
    templates: list = field(default_factory=lambda: ["a photo of a {}."], metadata={"help": "prompt template(s); several are ensembled"})
    steps: int = field(default=5000, metadata={"help": "optimizer steps (= BMA and cosine horizon)"})
    batch_size: int = field(default=12, metadata={"help": "images per training domain per step"})
    lr: float = field(default=5e-6, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay"})
    mms_lambda: float = field(default=0.3, metadata={"help": "MMS margin weight (0 = plain fine-tuning)"})
    margin_kind: str = field(default="adaptive", metadata={"help": "margin of each wrong class: adaptive (MMS: lambda x "
                                                                   "text distance), fixed (lambda), none",
                                                           "choices": MARGIN_KINDS})
    head: str = field(default="text", metadata={"help": "classifier: text (class text features, Eq. 2) or linear "
                                                        "(trained, initialized from them, Eq. 1; needs --margin-kind none)",
                                                "choices": HEAD_CHOICES})
    bma_beta: float = field(default=0.5, metadata={"help": "Beta(beta, beta) of the moving average"})
    averaging: str = field(default="bma", metadata={"help": "weight averaging used for prediction (uniform: the mean "
                                                            "of the weights after steps 1..T)",
                                                    "choices": AVERAGING_CHOICES})
    ema_decay: float = field(default=0.999, metadata={"help": "decay of --averaging ema"})
    precision: str = field(default="auto", metadata={"help": "auto: bf16 (else fp16) autocast on CUDA, fp32 elsewhere",
                                                     "choices": PRECISION_CHOICES})
    compile: str = field(default="auto", metadata={"help": "torch.compile the training step: auto (on CUDA), on, "
                                                           "reduce-overhead (with CUDA graphs), off",
                                                   "choices": COMPILE_CHOICES})
    decode: str = field(default="cpu", metadata={"help": "where training JPEGs are decoded and augmented: cpu (PIL in "
                                                         "the loader processes) or device (in batch on the training "
                                                         "device, nvJPEG on CUDA; for fast GPUs)",
                                                 "choices": DECODE_CHOICES})
    holdout_fraction: float = field(default=0.2, metadata={"help": "share of each training domain kept for validation"})
    eval_every: int = field(default=500, metadata={"help": "evaluate every N steps"})
    checkpoint_every: int = field(default=500, metadata={"help": "save a resumable checkpoint every N steps"})
    stop_after: int = field(default=None, metadata={"help": "stop (with a checkpoint) after this many steps; continue with --resume"})
    resume: bool = field(default=False, metadata={"help": "continue from OUTPUT_DIR/checkpoint.pt"})
    allow_missing_classes: bool = field(default=False, metadata={"help": "accept domains that lack some classes"})
    workers: int = field(default=min(4, os.cpu_count() or 1), metadata={"help": "data loading processes per domain"})
    eval_batch_size: int = field(default=128, metadata={"help": "batch size for evaluation"})
    seed: int = field(default=0, metadata={"help": "seed of the data order, augmentation and holdout split"})
    device: str = field(default=None, metadata={"help": "cuda, cpu, ... (default: cuda when available; under "
                                                         "torchrun each process takes cuda:LOCAL_RANK)"})

    # fields that may change between an interrupted run and its resumption
    RESUMABLE_CHANGES = ("output_dir", "stop_after", "resume", "workers", "eval_batch_size", "device", "compile",
                         "decode")


def _loader(items, transform, workers, **kwargs):
    return torch.utils.data.DataLoader(ImageList(items, transform), num_workers=workers, **kwargs)


def training_batches(items_per_domain, transform, batch_size, seed, workers, start_step=0, rank=0, world_size=1,
                     decode="cpu", device="cpu"):
    """(images, labels) of each step from ``start_step`` on: one batch of ``batch_size`` per training domain
    (this rank's share of it), concatenated. Each domain has its own loader processes and data order.

    ``decode="device"`` decodes and augments the JPEGs on ``device`` in one batch per step
    (clipood_plugin.device_decoding; the loader processes only read files and draw the crops), and the
    images come back on ``device``; with "cpu" the loader processes do it all with PIL.
    """
    if decode not in DECODE_CHOICES:
        raise DataError(f"unknown decode {decode!r}; choose one of {DECODE_CHOICES}")
    device = torch.device(device)
    on_device = DeviceAugmentation(transform) if decode == "device" else None
    streams = []
    for i, items in enumerate(items_per_domain):
        sampler = StepBatchSampler(len(items), batch_size, seed * 1000 + i, start_step, rank, world_size)
        dataset = ImageList(items, transform) if on_device is None else EncodedImageList(items, on_device)
        streams.append(iter(torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda",
            collate_fn=None if on_device is None else EncodedBatch.collate)))
    if on_device is None:
        for parts in _together(streams):
            yield torch.cat([images for images, _ in parts]), torch.cat([labels for _, labels in parts])
    else:
        yield from decoded_ahead(map(EncodedBatch.cat, _together(streams)), on_device, device)


def _together(streams):
    while True:
        yield [next(stream) for stream in streams]


def evaluate(learner, eval_loaders, averaged):
    """Accuracy (%) per evaluation split. Distributed, each rank's loaders hold its share of the split and
    the counts are summed over ranks (the weights, and so the predictions, are the same on every rank)."""
    counts = torch.zeros(len(eval_loaders), 2, dtype=torch.float64)
    for i, loader in enumerate(eval_loaders.values()):
        for images, labels in loader:
            counts[i, 0] += (learner.predict(images, averaged=averaged).argmax(1).cpu() == labels).sum().item()
            counts[i, 1] += len(labels)
    counts = distributed.all_reduce_sum(counts.to(learner.device)).cpu()
    return {name: 100.0 * correct / total for name, (correct, total) in zip(eval_loaders, counts.tolist())}


class _Run:
    """Files of one run in OUTPUT_DIR."""

    def __init__(self, output_dir):
        self.dir = Path(output_dir)
        self.checkpoint = self.dir / "checkpoint.pt"
        self.results = self.dir / "results.json"
        self.plot = self.dir / "results.png"
        self.model = self.dir / "model.pt"

    def save_atomic(self, obj, path):
        tmp = path.with_suffix(".tmp")
        torch.save(obj, tmp)
        os.replace(tmp, path)


def _check_resumable(saved, config):
    for key, value in dataclasses.asdict(config).items():
        if key not in TrainConfig.RESUMABLE_CHANGES and saved.get(key) != value:
            raise DataError(f"--resume: the checkpoint was made with {key}={saved.get(key)!r}, this command "
                            f"has {key}={value!r}; use the original setting or another --output-dir")


def train(config: TrainConfig, log=print):
    """Run (or resume) one training job; returns the results dict that is also written to results.json.

    Started by torchrun with several processes, it trains data-parallel: the inputs are checked on every
    rank before the process group forms (so a bad input stops them all alike), each rank reads its share
    of every batch and of every evaluation split, and rank 0 alone logs and writes files.
    """
    if not distributed.is_main():
        log = _quiet
    run = _Run(config.output_dir)
    if not config.test_domains:
        raise DataError("give at least one --test-domains")
    dataset = scan_domain_folders(config.data_dir, config.allow_missing_classes)
    unknown = sorted(set(config.test_domains) - set(dataset.domains))
    if unknown:
        raise DataError(f"unknown test domain(s) {unknown}; the domains in {config.data_dir} are {dataset.domains}")
    train_domains = [d for d in dataset.domains if d not in config.test_domains]
    if not train_domains:
        raise DataError(f"all domains {dataset.domains} are test domains; leave at least one to train on")
    if dataset.skipped:
        log(f"skipped {len(dataset.skipped)} unreadable image(s), listed in results.json (first: {dataset.skipped[0][0]})")
    if run.checkpoint.exists() and not config.resume:
        raise DataError(f"{run.checkpoint} holds an unfinished run; pass --resume to continue it or choose another --output-dir")
    if config.resume and not run.checkpoint.exists():
        raise DataError(f"--resume: no checkpoint at {run.checkpoint}")

    created_group = distributed.init_from_env(config.device)
    try:
        return _train(config, run, dataset, train_domains, log)
    finally:
        if created_group:
            distributed.shutdown()


def _quiet(*args, **kwargs):
    pass


def _train(config, run, dataset, train_domains, log):
    rank, world_size, main = distributed.rank(), distributed.world_size(), distributed.is_main()
    torch.manual_seed(config.seed)  # random-init models (clipood-tiny, pretrained none) start the same
    learner = CLIPoodLearner(
        model_name=config.model, pretrained=None if config.pretrained in (None, "none") else config.pretrained,
        class_names=dataset.class_names, total_steps=config.steps, lr=config.lr, weight_decay=config.weight_decay,
        margin=config.mms_lambda, margin_kind=config.margin_kind, head=config.head, beta=config.bma_beta,
        averaging=config.averaging, ema_decay=config.ema_decay, templates=config.templates,
        precision=config.precision, compile=config.compile, device=config.device)

    train_items, eval_loaders = {}, {}
    for i, domain in enumerate(train_domains):
        train_items[domain], holdout = split_holdout(dataset.samples[domain], config.holdout_fraction, config.seed + i)
        if holdout:
            eval_loaders[f"{domain} (holdout)"] = _loader(holdout[rank::world_size], learner.preprocess_val,
                                                          config.workers, batch_size=config.eval_batch_size)
    for domain in config.test_domains:
        eval_loaders[domain] = _loader(dataset.samples[domain][rank::world_size], learner.preprocess_val,
                                       config.workers, batch_size=config.eval_batch_size)

    state = {"history": [], "bma_weights": [], "losses": []}
    if config.resume:
        checkpoint = torch.load(run.checkpoint, map_location="cpu", weights_only=False)
        _check_resumable(checkpoint["config"], config)
        learner.load_state_dict(checkpoint["learner"])
        state = checkpoint["state"]
        log(f"resumed at step {learner.step} from {run.checkpoint}")
    else:
        zero_shot = evaluate(learner, eval_loaders, averaged=False)
        state["zero_shot"] = zero_shot
        state["bma_weights"].append(learner.averaging_weight)  # a_0, the weight of the pretrained model
        state["history"].append({"step": 0, "final": zero_shot, "bma": zero_shot})

    batches = training_batches([train_items[d] for d in train_domains], learner.preprocess_train,
                               config.batch_size, config.seed, config.workers, learner.step, rank, world_size,
                               config.decode, learner.device)
    last_step = min(config.steps, config.stop_after or config.steps)
    if main:
        run.dir.mkdir(parents=True, exist_ok=True)
    with tqdm(total=config.steps, initial=learner.step, desc="clipood train", unit="step", dynamic_ncols=True,
              mininterval=0.1 if sys.stderr.isatty() else 10, disable=not main) as bar:
        while learner.step < last_step:
            stats = learner.update(*next(batches))
            state["bma_weights"].append(stats["bma_weight"])
            state["losses"].append(stats["loss"])
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['acc']:.2f}", lr=f"{stats['lr']:.1e}",
                            refresh=False)
            step = learner.step
            if step % config.eval_every == 0 or step == config.steps:
                entry = {"step": step, "final": evaluate(learner, eval_loaders, averaged=False),
                         "bma": evaluate(learner, eval_loaders, averaged=True)}
                state["history"].append(entry)
                if main:
                    bar.write(f"step {step}: " + _summary(entry, config.test_domains))
            if main and step < config.steps and (step % config.checkpoint_every == 0 or step == last_step):
                run.save_atomic({"config": dataclasses.asdict(config), "learner": learner.state_dict(),
                                 "state": state}, run.checkpoint)
    if learner.step < config.steps:
        log(f"stopped at step {learner.step} of {config.steps}; continue with the same command and --resume")
        return None

    final = state["history"][-1]
    results = {
        "config": dataclasses.asdict(config), "class_names": dataset.class_names,
        "train_domains": train_domains, "test_domains": config.test_domains,
        "accuracy": {"zero_shot": state["zero_shot"], "final": final["final"], "bma": final["bma"]},
        "test_mean": {k: _mean(v, config.test_domains) for k, v in
                      (("zero_shot", state["zero_shot"]), ("final", final["final"]), ("bma", final["bma"]))},
        "history": state["history"], "bma_weights": state["bma_weights"], "losses": state["losses"],
        "skipped_images": [{"path": p, "reason": r} for p, r in dataset.skipped],
        "model_file": str(run.model),
    }
    if not main:
        return results
    run.save_atomic(learner.state_dict(include_training_state=False), run.model)
    run.results.write_text(json.dumps(results, indent=2))
    plot_results(results, run.plot)
    run.checkpoint.unlink(missing_ok=True)
    log(_report(results))
    log(f"wrote {run.results}, {run.plot} and {run.model}")
    return results


def _mean(accuracy, domains):
    return sum(accuracy[d] for d in domains) / len(domains)


def _summary(entry, test_domains):
    return (f"test acc final {_mean(entry['final'], test_domains):.1f}  "
            f"BMA {_mean(entry['bma'], test_domains):.1f}")


def _report(results):
    acc = results["accuracy"]
    names = list(acc["zero_shot"])
    width = max(len(n) for n in names + ["test mean"])
    lines = [f"{'accuracy (%)':<{width}}  zero-shot   final     BMA"]
    for name in names:
        lines.append(f"{name:<{width}}  {acc['zero_shot'][name]:9.1f} {acc['final'][name]:7.1f} {acc['bma'][name]:7.1f}")
    mean = results["test_mean"]
    lines.append(f"{'test mean':<{width}}  {mean['zero_shot']:9.1f} {mean['final']:7.1f} {mean['bma']:7.1f}")
    return "\n".join(lines)


def plot_results(results, path):
    """Left: test accuracy over steps (final vs BMA); right: the BMA weight a_t of each step (t=0: pretrained)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test_domains = results["test_domains"]
    steps = [h["step"] for h in results["history"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("final", "current weights"), ("bma", "BMA")):
        left.plot(steps, [_mean(h[key], test_domains) for h in results["history"]], marker="o", label=label)
    left.axhline(results["test_mean"]["zero_shot"], color="gray", linestyle="--", label="zero-shot")
    left.set(xlabel="step", ylabel="test accuracy (%)", title=f"test domains: {', '.join(test_domains)}")
    left.legend()
    right.plot(range(len(results["bma_weights"])), results["bma_weights"])
    right.set(xlabel="step", ylabel="weight a_t",
              title=f"{results['config']['averaging']} weights (beta={results['config']['bma_beta']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

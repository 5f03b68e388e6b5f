"""Training-step benchmark: ``CLIPoodLearner.update`` against a reference-style step, in one run.

    python bench/train_step.py --device cuda --model ViT-B-16 --batch 36 256
    python bench/train_step.py --device cpu --model clipood-tiny --batch 8 --steps 3 --warmup 1

The reference-style step is written from the description of the authors' code (docs/benchmarks.md):
fp16 weights, forward and backward in fp16 without loss scaling, parameters and gradients cast to fp32
around a plain AdamW step and back to fp16, then a BMA that loops over the parameters in Python and
allocates new tensors for each. Both variants use random-init weights (the compute does not depend on
them), the same MMS loss, and the same preloaded batch already at the model's resolution.

Prints one JSON line per (variant, batch), then one line of ratios per batch. ``bma_ms`` is the weight
averaging alone, timed separately on the same weights: ours is ``BetaMovingAverage.update`` over the
learner's trained module (one ``lerp_`` per flat buffer, docs/numerics.md), the reference's the Python loop.
"""
import argparse
import copy
import gc
import json
import warnings

import torch

from bench_utils import emit, log, peak_memory_gb, reset_peak_memory, resolve_device, timed
from clipood_plugin import BetaMovingAverage, CLIPoodLearner, load_clip, margin_metric_softmax
from clipood_plugin.averaging import beta_pdf
from clipood_plugin.backbone import image_size_of

CLASS_NAMES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]  # PACS: 7 classes
LR, WEIGHT_DECAY, MARGIN, BETA, LOGIT_SCALE = 5e-6, 0.1, 0.3, 0.5, 100.0


class ReferenceBMA:
    """avg <- (avg + w * theta) / (1 + w) with w = a_t / A_{t-1}, one parameter at a time, outside
    no_grad and into a new tensor each (what the reference code's moving average does)."""

    def __init__(self, model, total_steps, beta):
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.total_steps, self.beta = total_steps, beta
        self.step = 0
        self.weight_sum = self._weight(0)

    def _weight(self, t):
        return beta_pdf((t + 0.5) / (self.total_steps + 1), self.beta)

    def update(self, model):
        self.step += 1
        weight = self._weight(self.step)
        relative = weight / self.weight_sum
        for avg, param in zip(self.module.parameters(), model.parameters()):
            avg.data = (avg + relative * param) / (1 + relative)
        self.weight_sum += weight


class ReferenceStep:
    """The reference-style training step on an fp16 image encoder (see the module docstring)."""

    def __init__(self, model_name, total_steps, device):
        clip_model, *_ = load_clip(model_name, None)
        self.encoder = clip_model.visual.to(device).half().eval()
        self.params = [p for p in self.encoder.parameters() if p.requires_grad]
        self.text_features = torch.nn.functional.normalize(
            torch.randn(len(CLASS_NAMES), self.encoder.output_dim, device=device), dim=-1).half()
        self.optimizer = torch.optim.AdamW(self.params, lr=LR, weight_decay=WEIGHT_DECAY)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=total_steps)
        self.bma = ReferenceBMA(self.encoder, total_steps, BETA)

    def update(self, images, labels):
        features = self.encoder(images.half())
        loss = margin_metric_softmax(features, self.text_features, labels, MARGIN, LOGIT_SCALE)
        self.optimizer.zero_grad()
        loss.backward()
        for p in self.params:  # AdamW on fp32 copies: its moments are fp32, the weights are rounded back
            p.data = p.data.float()
            p.grad.data = p.grad.data.float()
        self.optimizer.step()
        for p in self.params:
            p.data = p.data.half()
        self.scheduler.step()
        self.bma.update(self.encoder)
        return loss.item()


def build(variant, model_name, total_steps, device, learner_kwargs):
    """(step function, BMA-alone function, description) for one variant."""
    torch.manual_seed(0)
    if variant == "reference":
        ref = ReferenceStep(model_name, total_steps, device)
        bma = ReferenceBMA(ref.encoder, total_steps, BETA)
        info = {"weights": "fp16", "image_size": image_size_of(ref.encoder)}
        return ref.update, lambda: bma.update(ref.encoder), info
    learner = CLIPoodLearner(model_name=model_name, pretrained=None, class_names=CLASS_NAMES,
                             total_steps=total_steps, lr=LR, weight_decay=WEIGHT_DECAY, margin=MARGIN, beta=BETA,
                             device=device, **learner_kwargs)
    # a second averager on the live weights, laid out flat as the learner's: timing its own would put it out of step
    bma = BetaMovingAverage(learner.model, total_steps, BETA)
    return learner.update, lambda: bma.update(learner.model), {
        "weights": "fp32", "precision": learner.precision, "image_size": learner.image_size}


def measure(variant, model, batch, device, learner_kwargs, steps=20, warmup=5, bma_repeats=20):
    total_steps = warmup + max(steps, bma_repeats)
    step, bma_update, info = build(variant, model, total_steps, device, learner_kwargs)
    images = torch.randn(batch, 3, info["image_size"], info["image_size"], device=device)
    labels = torch.randint(0, len(CLASS_NAMES), (batch,), device=device)
    reset_peak_memory(device)
    with warnings.catch_warnings(record=True) as caught:  # a compile that fell back must show in the record
        warnings.simplefilter("always")
        for _ in range(warmup):
            step(images, labels)
        seconds = timed(lambda: step(images, labels), steps, device)
    peak = peak_memory_gb(device)
    for _ in range(warmup):
        bma_update()
    bma_seconds = timed(bma_update, bma_repeats, device)
    record = {"variant": variant, "model": model, "device": device.type, "batch": batch, "steps": steps,
              "img_per_s": round(batch / seconds, 2), "step_ms": round(1e3 * seconds, 3),
              "bma_ms": round(1e3 * bma_seconds, 4), "peak_mem_gb": peak, "weights": info["weights"]}
    if variant != "reference":
        record.update(precision=info["precision"], learner_kwargs=learner_kwargs)
    if caught:
        record["warnings"] = sorted({str(w.message)[:300] for w in caught})[:5]
    return record


def measure_or_report_oom(variant, model, batch, device, learner_kwargs, **timing):
    try:
        return measure(variant, model, batch, device, learner_kwargs, **timing)
    except torch.cuda.OutOfMemoryError:
        return {"variant": variant, "model": model, "device": device.type, "batch": batch,
                "error": "out of memory: try a smaller --batch"}
    finally:
        gc.collect()  # the next case starts from a clean device and a clean compiler
        torch._dynamo.reset()
        reset_peak_memory(device)


def ratios(ours, reference):
    def ratio(a, b):
        return round(a / b, 3) if a and b else None
    return {"variant": "clipood/reference", "batch": ours["batch"], "learner_kwargs": ours.get("learner_kwargs"),
            "img_per_s_ratio": ratio(ours.get("img_per_s"), reference.get("img_per_s")),
            "bma_speedup": ratio(reference.get("bma_ms"), ours.get("bma_ms")),
            "peak_mem_ratio": ratio(ours.get("peak_mem_gb"), reference.get("peak_mem_gb"))}


def compare(model, batches, device, learner_configs=({},), **timing):
    """Records of each batch size in turn: the reference-style step, then per learner configuration (a dict of
    CLIPoodLearner arguments) our step and its ratios to the reference. ``timing``: steps, warmup, bma_repeats."""
    for batch in batches:
        log(f"reference: {model} on {device}, batch {batch}")
        reference = measure_or_report_oom("reference", model, batch, device, {}, **timing)
        yield reference
        for learner_kwargs in learner_configs:
            log(f"clipood {learner_kwargs or ''}: {model} on {device}, batch {batch}")
            ours = measure_or_report_oom("clipood", model, batch, device, learner_kwargs, **timing)
            yield ours
            yield ratios(ours, reference)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="ViT-B-16", help="open_clip model name or clipood-tiny (random init)")
    parser.add_argument("--batch", type=int, nargs="+", default=[36, 256])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    parser.add_argument("--bma-repeats", type=int, default=20, help="timed BMA updates per case")
    parser.add_argument("--learner-kwargs", type=json.loads, default={},
                        help='extra CLIPoodLearner arguments as JSON, e.g. \'{"precision": "fp32"}\'')
    args = parser.parse_args(argv)
    if min(args.batch) < 1 or args.steps < 1 or args.warmup < 0 or args.bma_repeats < 1:
        parser.error("--batch, --steps and --bma-repeats must be positive, --warmup at least 0")
    device = resolve_device(args.device)
    for record in compare(args.model, args.batch, device, [args.learner_kwargs], steps=args.steps,
                          warmup=args.warmup, bma_repeats=args.bma_repeats):
        emit(record)

if __name__ == "__main__":
    main()

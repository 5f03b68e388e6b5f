"""`clipood train`: CLIPood on a ROOT/<domain>/<class>/<image> folder dataset, leave-domains-out."""
import collections
import contextlib
import dataclasses
import math
import shutil
import signal
import sys
import threading
from pathlib import Path

import torch
from tqdm import tqdm

from . import distributed
from .data import ImageList, StepBatchSampler, ignore_stop_signals, scan_domain_folders, split_holdout
from .device_decoding import EncodedBatch, EncodedImageList, decoded_ahead, device_augmentation
from .files import claim_output_dir, load_checkpoint, save_atomic, save_tensors, write_json
from .learner import CLIPoodLearner
from .scalars import ScalarLog
from .settings import (AVERAGED_MODEL_NAMES, DECODE_CHOICES, ChangedSettingsError, DataError, TrainConfig, alphas_of,
                       changed_settings, check_device, flag)

RUN_CHECKPOINT_FORMAT = 1  # layout of OUTPUT_DIR/checkpoint.pt: config, learner, state, data


def evaluation_loader(items, transform, workers, **kwargs):
    """Evaluation batches (images, labels, skipped): an image that cannot be read is left out and reported."""
    return torch.utils.data.DataLoader(ImageList(items, transform, unreadable="drop"), num_workers=workers,
                                       collate_fn=ImageList.collate, worker_init_fn=ignore_stop_signals, **kwargs)


def training_batches(items_per_domain, transform, batch_size, seed, workers, start_step=0, rank=0, world_size=1,
                     decode="auto", device="cpu", skipped=None, domains=None):
    """(images, labels) of each step from ``start_step`` on: one batch of ``batch_size`` per training domain
    (this rank's share of it), concatenated. Each domain has its own loader processes and data order.

    ``decode="device"`` decodes and augments the JPEGs on ``device`` in one batch per step
    (clipood_plugin.device_decoding; the loader processes only read files and draw the crops), and the
    images come back on ``device``; with "cpu" the loader processes do it all with PIL; "auto" is "device" on
    CUDA where the transform allows, else "cpu".

    With a list ``skipped``, an image that cannot be read is replaced by the next readable one of its
    domain (ImageList "replace": the batches stay a function of the seed and the step) and its
    (path, reason) is appended to the list when its batch is yielded; without, it raises UnreadableImage.
    """
    if decode not in DECODE_CHOICES:
        raise DataError(f"unknown decode {decode!r}; choose one of {DECODE_CHOICES}")
    device = torch.device(device)
    on_device = device_augmentation(decode, transform, device)
    unreadable = "raise" if skipped is None else "replace"
    streams = []
    for i, items in enumerate(items_per_domain):
        sampler = StepBatchSampler(len(items), batch_size, seed * 1000 + i, start_step, rank, world_size,
                                   domain=domains and domains[i])  # ``domains``: their names, for messages
        if on_device is None:
            dataset, collate = ImageList(items, transform, unreadable), ImageList.collate
        else:
            dataset, collate = EncodedImageList(items, on_device, unreadable), EncodedBatch.collate
        streams.append(iter(torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, num_workers=workers,
            pin_memory=device.type == "cuda" and on_device is not None,  # decoded images: pinned once concatenated
            collate_fn=collate, worker_init_fn=ignore_stop_signals)))
    skipped = [] if skipped is None else skipped
    if on_device is None:
        for parts in _together(streams):
            skipped.extend(entry for *_, found in parts for entry in found)
            yield (_concatenated([images for images, *_ in parts], pinned=device.type == "cuda"),
                   torch.cat([labels for _, labels, _ in parts]))
    else:
        pending = collections.deque()  # what each batch skipped, until it comes back decoded (in order)

        def encoded():
            for batch in map(EncodedBatch.cat, _together(streams)):
                pending.append(batch.skipped)
                yield batch

        for images, labels in decoded_ahead(encoded(), on_device, device):
            skipped.extend(pending.popleft())
            yield images, labels


def _concatenated(tensors, pinned):
    """torch.cat, into page-locked memory when ``pinned`` so that the copy to the GPU can be asynchronous
    (a cat of pinned tensors is not pinned itself, so the loaders do not pin their parts)."""
    if not pinned:
        return torch.cat(tensors)
    out = torch.empty((sum(len(t) for t in tensors), *tensors[0].shape[1:]), dtype=tensors[0].dtype, pin_memory=True)
    return torch.cat(tensors, out=out)


def _together(streams):
    while True:
        yield [next(stream) for stream in streams]


def evaluate(learner, eval_loaders, averaged, skipped, batches_of=iter):
    """Accuracy (%) per evaluation split, over the images that can be read; the others' (path, reason) is
    appended to ``skipped``. ``batches_of(loader)`` iterates a loader. Distributed, each rank's loaders
    hold its share of the split and the counts are summed over ranks (the weights, and so the
    predictions, are the same on every rank)."""
    counts = torch.zeros(len(eval_loaders), 2, dtype=torch.float64)
    for i, loader in enumerate(eval_loaders.values()):
        for images, labels, unreadable in batches_of(loader):
            skipped.extend(unreadable)
            if images is not None:
                counts[i, 0] += (learner.predict(images, averaged=averaged).argmax(1).cpu() == labels).sum().item()
                counts[i, 1] += len(labels)
    counts = distributed.all_reduce_sum(counts.to(learner.device)).cpu()
    return {name: 100.0 * correct / total if total else math.nan
            for name, (correct, total) in zip(eval_loaders, counts.tolist())}


_END = object()  # what next() gives at the end of an iterator, in _StopSignals.between


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped the run; ``kept`` says, in a sentence, what of it is on disk. ``forced``: a
    second signal came while the first was waiting for a block to end, and the run stopped at once."""

    def __init__(self, signum, forced=False):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.forced = signum, forced
        self.kept = None


class _StopSignals:
    """While active, SIGINT and SIGTERM raise Interrupted at once, except inside ``deferred()`` (an optimizer
    step and its bookkeeping, a file write, the fetch of a batch): there they take effect when the block
    ends, so that the state a run saves is always that of a finished step. A second signal while the
    first one waits raises at once, with ``forced``."""

    def __init__(self):
        self._depth, self._pending, self._previous = 0, None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # Python runs signal handlers there only
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.getsignal(signum) or signal.SIG_DFL
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame):
        if self._depth and self._pending is None:
            self._pending = signum
        else:
            raise Interrupted(signum, forced=bool(self._depth))

    @contextlib.contextmanager
    def deferred(self):
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if not self._depth and self._pending is not None:
            signum, self._pending = self._pending, None
            raise Interrupted(signum)

    def between(self, iterable):
        """The items of ``iterable``, each fetched inside ``deferred()``: a signal takes effect between items,
        never in the middle of a DataLoader's receipt of a batch (which leaves its loader processes printing
        errors as the run exits)."""
        iterator = iter(iterable)
        while True:
            with self.deferred():
                item = next(iterator, _END)
            if item is _END:
                return
            yield item



class _RunFiles:
    """Files of one run in OUTPUT_DIR."""

    def __init__(self, output_dir):
        self.dir = Path(output_dir)
        self.checkpoint = self.dir / "checkpoint.pt"
        self.results = self.dir / "results.json"
        self.plot = self.dir / "results.png"
        self.model = self.dir / "model.pt"
        self.tensorboard = self.dir / "tensorboard"  # scalars, when tensorboard is installed

    def check_start(self, config):
        """Refuse to start where the run would overwrite work, or resume what is not there."""
        finished = [path.name for path in (self.results, self.model) if path.exists()]
        if config.resume and not self.checkpoint.exists():
            raise DataError(f"--resume: no checkpoint at {self.checkpoint}"
                            + (f" (the run there finished: {', '.join(finished)})" if finished else ""))
        if config.resume or config.overwrite:
            return
        if self.checkpoint.exists():
            raise DataError(f"{self.checkpoint} holds an unfinished run; pass --resume to continue it, --overwrite "
                            "to start over, or choose another --output-dir")
        if finished:
            raise DataError(f"{self.dir} holds a finished run ({', '.join(finished)}); pass --overwrite to replace "
                            "it, or choose another --output-dir")

    def clear(self):
        for path in (self.checkpoint, self.results, self.plot, self.model):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.tensorboard, ignore_errors=True)

    def load_checkpoint(self, config, dataset):
        """The run checkpoint, checked against this command's settings and dataset."""
        checkpoint = load_checkpoint(self.checkpoint)
        if not (isinstance(checkpoint, dict) and checkpoint.get("format") == RUN_CHECKPOINT_FORMAT
                and {"config", "learner", "state", "data"} <= set(checkpoint)):
            raise DataError(f"{self.checkpoint} is not a checkpoint of this version of clipood train; start over "
                            "with --overwrite, or choose another --output-dir")
        now = dataclasses.asdict(config)
        changes = changed_settings(checkpoint["config"], now,
                                   [key for key in now if key not in TrainConfig.RESUMABLE_CHANGES])
        if changes:
            raise ChangedSettingsError(changes, "resume with the checkpoint's settings, or start a new run in "
                                       "another --output-dir", spelled=flag)
        saved, now = checkpoint["data"], dataset.file_list_digest()
        changed = sorted(d for d in set(saved) | set(now) if saved.get(d) != now.get(d))
        if changed:
            counts = "; ".join(f"{d}: {saved.get(d, [0])[0]} image files then, {now.get(d, [0])[0]} now"
                               for d in changed)
            raise DataError(f"--resume: the image files of {config.data_dir} changed since the checkpoint ({counts}); "
                            "the holdout split and the data order are drawn from them: restore them, or start over "
                            "with --overwrite")
        return checkpoint


def train(config: TrainConfig, log=print, prepare_data=None):
    """Run (or resume) one training job; returns the results dict that is also written to results.json.

    The run holds OUTPUT_DIR for its whole life (a second run there stops at once with a DataError), and
    ``prepare_data(data_dir)``, when given, runs once it does, before the data is scanned (clipood demo
    writes its dataset into OUTPUT_DIR so). SIGINT or SIGTERM saves a checkpoint of the last finished
    step and raises Interrupted.

    Started by torchrun with several processes, it trains data-parallel: the inputs are checked on every
    rank before the process group forms (so a bad input stops them all alike), each rank reads its share
    of every batch and of every evaluation split, and rank 0 alone logs and writes files.
    """
    config.check()
    check_device(config.device)
    main = distributed.is_main()
    if not main:
        log = _quiet
    files = _RunFiles(config.output_dir)
    with claim_output_dir(files.dir) if main else contextlib.nullcontext(), _StopSignals() as signals:
        files.check_start(config)
        if prepare_data is not None:
            prepare_data(config.data_dir)
        dataset = scan_domain_folders(config.data_dir, config.allow_missing_classes)
        unknown = sorted(set(config.test_domains) - set(dataset.domains))
        if unknown:
            raise DataError(f"unknown test domain(s) {unknown}; the domains in {config.data_dir} are {dataset.domains}")
        train_domains = [d for d in dataset.domains if d not in config.test_domains]
        if not train_domains:
            raise DataError(f"all domains {dataset.domains} are test domains; leave at least one to train on")
        if dataset.skipped:
            log(f"skipped {len(dataset.skipped)} unreadable image(s), listed in results.json "
                f"(first: {dataset.skipped[0][0]})")
        created_group = distributed.init_from_env(config.device)
        try:
            return _TrainingRun(config, files, dataset, train_domains, signals, log).run()
        except Interrupted as stop:
            if stop.kept is None:
                stop.kept = (f"{files.checkpoint} is as it was; continue with the same command and --resume"
                             if files.checkpoint.exists() else "nothing had been trained yet, so nothing was saved")
            raise
        finally:
            if created_group:
                distributed.shutdown()


def _quiet(*args, **kwargs):
    pass


class _TrainingRun:
    """One invocation of a run: the learner, its evaluation loaders, the state its checkpoints carry
    (evaluation history, BMA weights, losses, unreadable images) and the files it writes.

    ``--stop-after N`` counts the steps of this invocation, from the step it resumed at: the same command
    with --resume, repeated (Slurm's requeue), makes N more steps each time until the run ends.
    """

    def __init__(self, config, files, dataset, train_domains, signals, log):
        self.config, self.files, self.dataset, self.train_domains = config, files, dataset, train_domains
        self.signals, self.log = signals, log
        self.rank, self.world_size, self.main = distributed.rank(), distributed.world_size(), distributed.is_main()
        torch.manual_seed(config.seed)  # random-init models (clipood-tiny, pretrained none) start the same
        self.learner = CLIPoodLearner(
            model_name=config.model, pretrained=None if config.pretrained in (None, "none") else config.pretrained,
            image_norm=config.image_norm, class_names=dataset.class_names, total_steps=config.steps, lr=config.lr,
            weight_decay=config.weight_decay, margin=config.mms_lambda, margin_kind=config.margin_kind,
            head=config.head, beta=config.bma_beta, averaging=config.averaging, ema_decay=config.ema_decay,
            swad_every=config.swad_every, swad_n_converge=config.swad_n_converge,
            swad_n_tolerance=config.swad_n_tolerance, swad_tolerance_ratio=config.swad_tolerance_ratio,
            templates=config.templates, precision=config.precision, compile=config.compile, device=config.device)
        self.train_items, self.eval_loaders = {}, {}
        for i, domain in enumerate(train_domains):
            self.train_items[domain], holdout = split_holdout(dataset.samples[domain], config.holdout_fraction,
                                                              config.seed + i)
            if holdout:
                self.eval_loaders[f"{domain} (holdout)"] = self._eval_loader(holdout)
        for domain in config.test_domains:
            self.eval_loaders[domain] = self._eval_loader(dataset.samples[domain])
        # WiSE-FT's theta_0: the weights as built (a resumed run is built the same, seed included, then loaded)
        self.theta_0 = None if config.wise_ft is None else {
            name: tensor.detach().clone() for name, tensor in self.learner.inference_encoder.state_dict().items()}
        self.state = self._resumed_state() if config.resume else self._fresh_state()
        for path, reason in dataset.skipped:
            self.state["skipped_images"].setdefault(path, reason)
        self.saved_step = self.learner.step if config.resume else None  # the step of the checkpoint on disk
        self.found = []  # (path, reason) of images found unreadable while training or evaluating
        self.first_step = self.learner.step
        self.last_step = config.steps if config.stop_after is None else min(config.steps,
                                                                            self.first_step + config.stop_after)
        self.scalars = ScalarLog(files.tensorboard if self.main else None,
                                 resumed_at=self.first_step if config.resume else None)

    def _eval_loader(self, items):
        return evaluation_loader(items[self.rank::self.world_size], self.learner.preprocess_val, self.config.workers,
                                 batch_size=self.config.eval_batch_size)

    def _resumed_state(self):
        checkpoint = self.files.load_checkpoint(self.config, self.dataset)
        try:
            self.learner.load_state_dict(checkpoint["learner"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise DataError(f"{self.files.checkpoint} does not fit the model of this run ({error}); start over with "
                            "--overwrite, or choose another --output-dir") from None
        self.log(f"resumed at step {self.learner.step} from {self.files.checkpoint}")
        return checkpoint["state"]

    def _fresh_state(self):
        if self.main:
            self.files.clear()  # --overwrite: the previous run's files go once this one is ready to start
        return {"history": [], "bma_weights": [], "losses": [], "skipped_images": {}}

    # ----------------------------------------------------------------- bookkeeping
    def record_found(self, say):
        for path, reason in self.found:
            if path not in self.state["skipped_images"]:
                self.state["skipped_images"][path] = reason
                say(f"skipped unreadable image {path} ({reason}); listed in results.json")
        self.found.clear()

    def save_checkpoint(self, all_ranks=True):
        if all_ranks:  # else the other ranks may be gone: only this rank's unreadable images are listed
            self.state["skipped_images"] = _gathered(self.state["skipped_images"], self.world_size)
        _require_finite(self.learner, self.state, self.config)
        if self.main:
            with self.signals.deferred():
                save_tensors({"format": RUN_CHECKPOINT_FORMAT, "config": dataclasses.asdict(self.config),
                              "learner": self.learner.state_dict(), "state": self.state,
                              "data": self.dataset.file_list_digest()}, self.files.checkpoint)
        self.saved_step = self.learner.step

    def log_evaluation(self, entry):
        """An entry of the history as scalars: each split's accuracy and the test mean, of the current
        weights (final) and of the averaged ones (bma)."""
        for key in ("final", "bma"):
            accuracy = {**entry[key], "test mean": mean_accuracy(entry[key], self.config.test_domains)}
            self.scalars.add_accuracy(accuracy, entry["step"], prefix=f"accuracy_{key}")

    def evaluate(self, averaged):
        return evaluate(self.learner, self.eval_loaders, averaged, self.found, self.signals.between)

    @property
    def holdout_splits(self):
        """The names of the evaluation splits held out of the training domains."""
        return [name for name in self.eval_loaders if name not in self.config.test_domains]

    def validate(self):
        """The learner's validation loss (SWAD) on the training domains' holdout."""
        def readable(loader):
            for images, labels, unreadable in self.signals.between(loader):
                self.found.extend(unreadable)
                if images is not None:
                    yield images, labels
        return self.learner.validate([readable(self.eval_loaders[name]) for name in self.holdout_splits])

    def wise_ft_curve(self, alphas):
        """WiSE-FT of the model the run predicts with: per alpha, the accuracy on each split and the means over
        the holdout and the test domains; the alpha whose holdout mean is highest (the first such; None without
        a holdout)."""
        from .wise_ft import wise_ft_accuracy

        curve = wise_ft_accuracy(self.learner, self.theta_0, alphas, self.eval_loaders, self.found)
        holdout = self.holdout_splits
        entries = [{"alpha": alpha, "accuracy": accuracy,
                    "holdout_mean": mean_accuracy(accuracy, holdout) if holdout else None,
                    "test_mean": mean_accuracy(accuracy, self.config.test_domains)}
                   for alpha, accuracy in curve.items()]
        best = max(entries, key=lambda entry: entry["holdout_mean"]) if holdout else None
        return {"curve": entries, "best_alpha": best and best["alpha"]}

    def _eval_due(self, step):
        return (step % self.config.eval_every == 0 or step == self.config.steps) \
            and self.state["history"][-1]["step"] != step

    def _checkpoint_due(self, step):
        return step != self.saved_step and 0 < step < self.config.steps \
            and (step % self.config.checkpoint_every == 0 or step == self.last_step)

    # ----------------------------------------------------------------- the run
    def run(self):
        """Train to ``last_step``; the results dict once the run has ended, else None (stopped by
        --stop-after with a checkpoint). SIGINT or SIGTERM raise Interrupted, saying what is on disk."""
        try:
            self._evaluate_zero_shot()
            self._train()
        except Interrupted as stop:
            learner = self.learner
            if not stop.forced and learner.step not in (0, self.saved_step):  # forced: the step may be half done
                self.save_checkpoint(all_ranks=False)
            if self.main and self.saved_step is not None:
                stop.kept = (f"{self.files.checkpoint} holds step {self.saved_step} of {self.config.steps}; "
                             "continue with the same command and --resume")
            raise
        finally:
            self.scalars.close()
        if self.learner.step < self.config.steps:
            self.log(f"stopped at step {self.learner.step} of {self.config.steps} after {self.config.stop_after} "
                     "step(s) (--stop-after); continue with the same command and --resume")
            return None
        return self._finish()

    def _evaluate_zero_shot(self):
        if "zero_shot" in self.state:
            return
        zero_shot = self.evaluate(averaged=False)
        with self.signals.deferred():
            self.state["zero_shot"] = zero_shot
            self.state["bma_weights"].append(self.learner.averaging_weight)  # a_0, the weight of the pretrained model
            self.state["history"].append({"step": 0, "final": zero_shot, "bma": zero_shot})
            self.record_found(self.log)
        self.log_evaluation(self.state["history"][-1])

    def _train(self):
        config, learner, signals, state = self.config, self.learner, self.signals, self.state
        batches = training_batches([self.train_items[d] for d in self.train_domains], learner.preprocess_train,
                                   config.batch_size, config.seed, config.workers, learner.step, self.rank,
                                   self.world_size, config.decode, learner.device, skipped=self.found,
                                   domains=self.train_domains)
        with tqdm(total=config.steps, initial=learner.step, desc="clipood train", unit="step", dynamic_ncols=True,
                  mininterval=0.1 if sys.stderr.isatty() else 10, disable=not self.main) as bar:
            say = bar.write if self.main else _quiet
            while True:
                step = learner.step
                if learner.validation_due:
                    say(f"step {step}: holdout loss {self.validate()!r}; {learner.averager.describe()}")
                if self._eval_due(step):
                    _require_finite(learner, state, config)
                    entry = {"step": step, "final": self.evaluate(averaged=False), "bma": self.evaluate(averaged=True)}
                    with signals.deferred():
                        state["history"].append(entry)
                        self.record_found(say)
                    say(f"step {step}: " + _summary(entry, config))
                    self.log_evaluation(entry)
                if self._checkpoint_due(step):
                    self.save_checkpoint()
                if step >= self.last_step:
                    return
                with signals.deferred():
                    images, labels = next(batches)
                with signals.deferred():
                    stats = learner.update(images, labels)
                    state["bma_weights"].append(stats["bma_weight"])
                    state["losses"].append(stats["loss"])
                    self.record_found(say)
                    self.scalars.add_step(stats, learner.step)
                    bar.update(1)
                    bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['acc']:.2f}", lr=f"{stats['lr']:.1e}",
                                    refresh=False)

    def _finish(self):
        config, state, files, learner = self.config, self.state, self.files, self.learner
        state["skipped_images"] = _gathered(state["skipped_images"], self.world_size)
        _require_finite(learner, state, config)
        final = state["history"][-1]
        results = {
            "config": dataclasses.asdict(config), "class_names": self.dataset.class_names,
            "train_domains": self.train_domains, "test_domains": config.test_domains,
            "accuracy": {"zero_shot": state["zero_shot"], "final": final["final"], "bma": final["bma"]},
            "test_mean": {k: mean_accuracy(v, config.test_domains) for k, v in
                          (("zero_shot", state["zero_shot"]), ("final", final["final"]), ("bma", final["bma"]))},
            "history": state["history"], "bma_weights": state["bma_weights"], "losses": state["losses"],
            "skipped_images": [{"path": p, "reason": r} for p, r in sorted(state["skipped_images"].items())],
            "model_file": str(files.model),
        }
        if config.averaging == "swad":  # the steps it averaged (None: it never converged) and its losses
            swad = learner.averager
            results["swad"] = {"window": swad.window, "valley_ended": swad.dead, "holdout_losses": swad.losses}
        if config.wise_ft is not None:
            results["wise_ft"] = self.wise_ft_curve(alphas_of(config.wise_ft, "--wise-ft"))
        if not self.main:
            return results
        with contextlib.suppress(Interrupted), self.signals.deferred():  # a stop signal now finds the run finished
            save_tensors(learner.state_dict(include_training_state=False), files.model)
            write_json(results, files.results)
            plot_results(results, files.plot)
            files.checkpoint.unlink(missing_ok=True)
        self.log(_report(results))
        self.log(f"wrote {files.results}, {files.plot} and {files.model}")
        return results


def _gathered(skipped_images, world_size):
    """The union of every rank's {path: reason} of unreadable images (each rank reads its share)."""
    if world_size == 1:
        return skipped_images
    parts = [None] * world_size
    torch.distributed.all_gather_object(parts, skipped_images)
    return {path: reason for part in parts for path, reason in sorted(part.items())}


def _require_finite(learner, state, config):
    """Stop a diverged run before it saves or evaluates a model whose weights are not finite."""
    weights = [t for encoder in (learner.model, learner.inference_encoder)  # with a linear head: encoder and head
               for t in encoder.state_dict().values() if t.is_floating_point()]
    if bool(torch.stack([torch.isfinite(t).all() for t in weights]).all()):
        return
    first = next((i + 1 for i, loss in enumerate(state["losses"]) if not math.isfinite(loss)), None)
    raise DataError(f"training diverged: the weights are not finite at step {learner.step}"
                    + (f" (the loss first was at step {first})" if first else "")
                    + f", so they were neither evaluated nor saved; start over with a lower --lr (this run: "
                    f"{config.lr:g}) and --overwrite")


def mean_accuracy(accuracy, domains=None):
    """The mean of {domain: accuracy} over ``domains`` (all of them by default)."""
    domains = list(accuracy) if domains is None else domains
    return sum(accuracy[d] for d in domains) / len(domains)


def _summary(entry, config):
    return (f"test acc final {mean_accuracy(entry['final'], config.test_domains):.1f}  "
            f"{AVERAGED_MODEL_NAMES[config.averaging]} {mean_accuracy(entry['bma'], config.test_domains):.1f}")


def _report(results):
    acc = results["accuracy"]
    names = list(acc["zero_shot"])
    width = max(len(n) for n in names + ["test mean"])
    lines = [f"{'accuracy (%)':<{width}}  zero-shot   final {AVERAGED_MODEL_NAMES[results['config']['averaging']]:>7}"]
    for name in names:
        lines.append(f"{name:<{width}}  {acc['zero_shot'][name]:9.1f} {acc['final'][name]:7.1f} {acc['bma'][name]:7.1f}")
    mean = results["test_mean"]
    lines.append(f"{'test mean':<{width}}  {mean['zero_shot']:9.1f} {mean['final']:7.1f} {mean['bma']:7.1f}")
    if "wise_ft" in results:
        wise_ft = results["wise_ft"]
        lines.append("WiSE-FT alpha  holdout mean  test mean")
        for entry in wise_ft["curve"]:
            holdout = "-" if entry["holdout_mean"] is None else f"{entry['holdout_mean']:.1f}"
            best = "  <- best on the holdout" if entry["alpha"] == wise_ft["best_alpha"] else ""
            lines.append(f"{entry['alpha']:>13g}  {holdout:>12}  {entry['test_mean']:9.1f}{best}")
    return "\n".join(lines)


def plot_results(results, path):
    import matplotlib.pyplot as plt

    figure = results_figure(results)
    save_atomic(lambda file: figure.savefig(file, dpi=100, format="png"), path)
    plt.close(figure)


def results_figure(results):
    """Left: test accuracy over steps (final vs the averaged model) against zero-shot; middle: the training loss of each
    step; right: the BMA weight a_t of each step (t=0: pretrained)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test_domains = results["test_domains"]
    steps = [h["step"] for h in results["history"]]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4))
    for key, label in (("final", "current weights"), ("bma", AVERAGED_MODEL_NAMES[results["config"]["averaging"]])):
        left.plot(steps, [mean_accuracy(h[key], test_domains) for h in results["history"]], marker="o", label=label)
    random_init = results["config"]["pretrained"] in (None, "none")
    left.axhline(results["test_mean"]["zero_shot"], color="gray", linestyle="--",
                 label="zero-shot (random init: chance level)" if random_init else "zero-shot")
    left.set(xlabel="step", ylabel="test accuracy (%)", title=f"test domains: {', '.join(test_domains)}")
    left.legend()
    middle.plot(range(1, len(results["losses"]) + 1), results["losses"])
    middle.set(xlabel="step", ylabel="loss", title="training loss")
    right.plot(range(len(results["bma_weights"])), results["bma_weights"])
    right.set(xlabel="step", ylabel="weight a_t",
              title=f"{results['config']['averaging']} weights (beta={results['config']['bma_beta']})")
    fig.tight_layout()
    return fig

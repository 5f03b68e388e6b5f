"""The run loop of `clipood train`: the learner, its evaluations, checkpoints and stop signals, step by step to
the end of the run (standalone.train starts it once the run's inputs are checked)."""
import contextlib
import sys

import torch
from tqdm import tqdm

from . import distributed
# first of the package's: its import of open_clip is where a torchvision that does not fit torch is one line
from .backbone import WeightsUnavailableError
from .batch_stream import training_batches
from .data import split_holdout
from .errors import LearnedNothingError
from .evaluation import evaluate, evaluation_loader
from .files import save_tensors
from .learner import LEARNER_SETTINGS, CLIPoodLearner
from .results_table import mean_accuracy
from .run_files import RunState
from .run_report import FAILED, failed_results, plot_results, report, run_results, write_results
from .scalars import ScalarLog
from .settings import AVERAGED_MODEL_NAMES, TINY_MODEL, DataError
from .stop_signals import Interrupted
from .train_config import alphas_of
from .wise_ft import wise_ft_accuracy


class TrainingRun:
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
        settings = {name: value for name, value in config.core_values().items() if name in LEARNER_SETTINGS}
        if settings["pretrained"] == "none":  # the command line's word for random init
            settings["pretrained"] = None
        try:
            self.learner = CLIPoodLearner(**settings, class_names=dataset.class_names, total_steps=config.steps)
        except WeightsUnavailableError as error:
            raise error.worded_for("--pretrained {path}", f"--model {TINY_MODEL} --pretrained none",
                                   "--image-norm {norm}") from None
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
        self.state.record_skipped(dataset.skipped)
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
        learner_state, state = self.files.load_checkpoint(self.config, self.dataset)
        try:
            self.learner.load_state_dict(learner_state)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise DataError(f"{self.files.checkpoint} does not fit the model of this run ({error}); start over with "
                            "--overwrite, or choose another --output-dir") from None
        self.log(f"resumed at step {self.learner.step} from {self.files.checkpoint}")
        return state

    def _fresh_state(self):
        if self.main:
            self.files.clear()  # --overwrite: the previous run's files go once this one is ready to start
        return RunState()

    # ----------------------------------------------------------------- bookkeeping
    def record_found(self, say):
        for path, reason in self.state.record_skipped(self.found):
            say(f"skipped unreadable image {path} ({reason}); listed in results.json")
        self.found.clear()

    def save_checkpoint(self, all_ranks=True):
        if all_ranks:  # else the other ranks may be gone: only this rank's unreadable images are listed
            self.state.skipped_images = _gathered(self.state.skipped_images, self.world_size)
        _require_finite(self.learner, self.state, self.config)
        if self.main:
            with self.signals.deferred():
                self.files.save_checkpoint(self.config, self.learner, self.state, self.dataset)
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
            and self.state.history[-1]["step"] != step

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
        except LearnedNothingError as failure:
            self._keep_as_failed(failure)
            raise
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
        if self.state.zero_shot is not None:
            return
        zero_shot = self.evaluate(averaged=False)
        with self.signals.deferred():
            self.state.record_zero_shot(zero_shot, self.learner.averaging_weight)
            self.record_found(self.log)
        self.log_evaluation(self.state.history[-1])

    def _train(self):
        config, learner, signals, state = self.config, self.learner, self.signals, self.state
        batches = training_batches([self.train_items[d] for d in self.train_domains], learner.preprocess_train,
                                   config.batch_size, config.seed, config.workers, learner.step, self.rank,
                                   self.world_size, config.decode, learner.device, skipped=self.found,
                                   domains=self.train_domains)
        with tqdm(total=config.steps, initial=learner.step, desc="clipood train", unit="step", dynamic_ncols=True,
                  mininterval=0.1 if sys.stderr.isatty() else 10, disable=not self.main) as bar:
            say = bar.write if self.main else self.log
            while True:
                step = learner.step
                if learner.validation_due:
                    say(f"step {step}: holdout loss {self.validate():.4f}; {learner.averager.describe()}")
                if self._eval_due(step):
                    _require_finite(learner, state, config)
                    entry = {"step": step, "final": self.evaluate(averaged=False), "bma": self.evaluate(averaged=True)}
                    with signals.deferred():
                        state.history.append(entry)
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
                    state.record_step(stats)
                    self.record_found(say)
                    self.scalars.add_step(stats, learner.step)
                    bar.update(1)
                    bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['acc']:.2f}", lr=f"{stats['lr']:.1e}",
                                    refresh=False)

    def _keep_as_failed(self, failure):
        """results.json marked failed, with what the run recorded: no model.pt, and the last checkpoint kept."""
        if self.main:
            with contextlib.suppress(Interrupted), self.signals.deferred():
                write_results(failed_results(self.config, self.dataset.class_names, self.train_domains, self.state,
                                             str(failure)), self.files.results)
            self.log(f"the run failed; {self.files.results} records it (\"{FAILED}\") and what it had logged")

    def _finish(self):
        config, state, files, learner = self.config, self.state, self.files, self.learner
        state.skipped_images = _gathered(state.skipped_images, self.world_size)
        _require_finite(learner, state, config)
        results = run_results(config, self.dataset.class_names, self.train_domains, state, files.model)
        if config.averaging == "swad":  # the steps it averaged (None: it never converged) and its losses
            swad = learner.averager
            results["swad"] = {"window": swad.window, "valley_ended": swad.dead, "holdout_losses": swad.losses}
        if config.wise_ft is not None:
            results["wise_ft"] = self.wise_ft_curve(alphas_of(config.wise_ft, "--wise-ft"))
        if not self.main:
            return results
        with contextlib.suppress(Interrupted), self.signals.deferred():  # a stop signal now finds the run finished
            save_tensors(learner.state_dict(include_training_state=False), files.model)
            write_results(results, files.results)
            plot_results(results, files.plot)
            files.checkpoint.unlink(missing_ok=True)
        self.log(report(results))
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
    first = state.first_nonfinite_loss_step()
    raise DataError(f"training diverged: the weights are not finite at step {learner.step}"
                    + (f" (the loss first was at step {first})" if first else "")
                    + f", so they were neither evaluated nor saved; start over with a lower --lr (this run: "
                    f"{config.lr:g}) and --overwrite")


def _summary(entry, config):
    return (f"test acc final {mean_accuracy(entry['final'], config.test_domains):.1f}  "
            f"{AVERAGED_MODEL_NAMES[config.averaging]} {mean_accuracy(entry['bma'], config.test_domains):.1f}")

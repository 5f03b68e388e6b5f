"""CLIPood, CLIPERM and CLIPZeroShot on DomainBed's Algorithm contract, delegating to CLIPoodLearner.

The classes are made at registration time on top of ``domainbed.algorithms.Algorithm``
(``build_algorithm_classes``), so importing this module needs neither DomainBed nor open_clip.
"""
import atexit
import os
import signal
import sys
import threading
import warnings
import weakref

import torch
from clipood_plugin.open_classes import num_base_classes
from clipood_plugin.scalars import ScalarLog
from clipood_plugin.settings import TINY_MODEL, random_init_warning

from .class_names import resolve_class_names
from .data import check_prepared, data_settings
from .hparams import ABLATION_HPARAMS, ALGORITHM_NAMES, check_hparams, core_values
from .run_context import current_train_run, environment_being_evaluated, training_holdout_loaders

# How each algorithm configures the learner (Table 1 rows from one harness). CLIPood's Figure 5 switches
# missing from hparams (saved before they existed) take the learner's defaults, the method's.
LEARNER_SETTINGS = {
    "CLIPood": lambda hparams: core_values(hparams, ("mms_lambda", "bma_beta", *ABLATION_HPARAMS)),
    "CLIPERM": lambda hparams: dict(margin=0.0, averaging="none"),
    "CLIPZeroShot": lambda hparams: dict(zero_shot=True),
}
REQUIRED_HPARAMS = {
    "CLIPood": ("clip_model", "clip_pretrained", "prompt_template", "lr", "weight_decay", "mms_lambda", "bma_beta"),
    "CLIPERM": ("clip_model", "clip_pretrained", "prompt_template", "lr", "weight_decay"),
    "CLIPZeroShot": ("clip_model", "clip_pretrained", "prompt_template"),
}
DESCRIPTIONS = {
    "CLIPood": "CLIPood (Shu et al., ICML 2023): CLIP image encoder fine-tuned with Margin Metric Softmax; "
               "predicts with the Beta Moving Average of its weights.",
    "CLIPERM": "ERM with CLIP: the same vision-language fine-tuning without margin (lambda=0) or averaging.",
    "CLIPZeroShot": "Zero-shot CLIP: never trains (run it with --steps 1).",
}
# DomainBed's MNIST variants (1 or 2 channels) are ToTensor images in [0, 1]; every other dataset is
# ImageNet-normalized, or with clip_transforms "clipood" or "model" uint8 training crops and evaluation images
# normalized as the model's input (None: the model's own). The learner maps each exactly onto the model's
# normalization and resolution.
UNIT_RANGE = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def input_normalization(input_shape, clip_transforms="domainbed"):
    """(mean, std) of the images DomainBed feeds for a dataset of this input shape and transforms."""
    from clipood_plugin import IMAGENET_MEAN, IMAGENET_STD
    if input_shape[0] < 3:
        return UNIT_RANGE
    return (IMAGENET_MEAN, IMAGENET_STD) if clip_transforms == "domainbed" else (None, None)


def _fallback_steps():
    try:
        from domainbed.datasets import MultipleDomainDataset
    except ImportError:
        return None
    return MultipleDomainDataset.N_STEPS


def resolve_horizon(requested, run):
    """The number of update() calls the run will make: the BMA and cosine-schedule horizon."""
    if run is not None:
        if requested is not None and int(requested) != run.n_steps:
            raise ValueError(f"hparams steps={requested} but train.py will run {run.n_steps} steps (its --steps, "
                             "else the dataset's N_STEPS); drop the hparam steps or make the two agree")
        return run.n_steps
    if requested is not None:
        return int(requested)
    fallback = _fallback_steps()
    if fallback is None:
        raise ValueError("the number of training steps is unknown outside domainbed.scripts.train: set "
                         "hparams['steps'] to the number of update() calls that will be made")
    warnings.warn(f"CLIP algorithm built outside domainbed.scripts.train without hparams['steps']: assuming "
                  f"DomainBed's default of {fallback} steps for the BMA and learning-rate horizon; set "
                  "hparams['steps'] to the number of update() calls you will make", stacklevel=3)
    return fallback


def _report_incomplete_run(algorithm_ref):
    algorithm = algorithm_ref()
    if algorithm is not None and algorithm.learner.step < algorithm.total_steps:
        print(f"WARNING: {type(algorithm).__name__} made {algorithm.learner.step} of the {algorithm.total_steps} "
              "optimizer steps its BMA and learning-rate schedule were built for; its averaged model "
              "is incomplete. DomainBed runs do not resume: run the command again (a sweep's delete_incomplete "
              "removes the run's directory first)", file=sys.stderr)


def _report_incomplete_run_on_sigterm(algorithm_ref):
    """Print the note of an incomplete run when SIGTERM ends the process (which skips atexit), then end it as
    SIGTERM would have: through the handler there was before, else by the signal's default action."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        _report_incomplete_run(algorithm_ref)
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            os.kill(os.getpid(), signum)

    if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, on_sigterm)


class CLIPAlgorithm:
    """Mixin put in front of DomainBed's Algorithm: ``update`` / ``predict`` / model.pkl state.

    In the wild (``open_class_ratio`` > 0) the learner trains against the text features of the base
    classes only (the first ``num_base_classes``; the new classes' names are unknown until test time) on
    data holding base-class images only (``domainbed_adapter.data``), and ``predict`` classifies among all
    classes, except in train.py's evaluation of a training environment: that is the training-domain
    validation DomainBed selects models by, which the authors score against the base-class names only
    (engine.py line 249), so new-class names never reach model selection."""

    algorithm_name = None  # set per class by build_algorithm_classes

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        from clipood_plugin import CLIPoodLearner, WeightsUnavailableError

        name = self.algorithm_name
        missing = [key for key in REQUIRED_HPARAMS[name] if key not in hparams]
        if missing:
            raise KeyError(f"{name} hparams lack {missing}: build them with domainbed.hparams_registry."
                           f"default_hparams('{name}', dataset) after domainbed_adapter.register()")
        run = current_train_run()
        self.test_envs = None if run is None else run.test_envs
        swad = name == "CLIPood" and hparams.get("averaging") == "swad"
        # SWAD's validation data: the out-splits train.py holds out of the training environments
        self.holdout_loaders = training_holdout_loaders() if swad else None
        check_hparams(name, hparams, run and run.dataset_name, held_out=bool(self.holdout_loaders) if swad else None)
        self.zero_shot = name == "CLIPZeroShot"
        self.total_steps = None if self.zero_shot else resolve_horizon(hparams.get("steps"), run)
        if not self.zero_shot and hparams.get("steps") is None:
            hparams["steps"] = self.total_steps  # so results.jsonl and model.pkl record the horizon used
        clip_transforms, open_class_ratio = data_settings(hparams)
        if run is not None and run.dataset is not None:
            check_prepared(run.dataset, hparams)
        class_names, class_names_source = resolve_class_names(
            num_classes, hparams.get("class_names"), run and run.dataset_name, run and run.dataset)
        hparams["class_names"] = list(class_names)  # so results.jsonl and model.pkl record the names used
        self.num_classes = num_classes
        self.num_base_classes = num_base_classes(num_classes, open_class_ratio)
        self.eval_class_names = class_names
        self.train_class_names = class_names[:self.num_base_classes]
        self._skipped_total = 0  # steps skipped so far (non-finite loss or gradients)
        mean, std = input_normalization(input_shape, clip_transforms)
        try:
            self.learner = CLIPoodLearner(
                model_name=hparams["clip_model"], pretrained=hparams["clip_pretrained"],
                class_names=self.train_class_names, total_steps=self.total_steps, input_mean=mean, input_std=std,
                **core_values(hparams, ("lr", "weight_decay", "prompt_template", "clip_compile", "clip_precision",
                                        "clip_image_norm")),
                **LEARNER_SETTINGS[name](hparams))
        except WeightsUnavailableError as error:
            raise error.worded_for("the hparam clip_pretrained (--hparams '{\"clip_pretrained\": \"{path}\"}')",
                                   f'the hparams {{"clip_model": "{TINY_MODEL}", "clip_pretrained": null}}',
                                   'the hparam clip_image_norm "{norm}"') from None
        warning = None if self.zero_shot else random_init_warning(
            hparams["clip_pretrained"], hparams.get("lr", 0.0), "the hparam clip_pretrained null",
            "--hparams '{{\"lr\": {}}}'")
        if warning:
            warnings.warn(f"{name}: {warning}", stacklevel=2)
        if run is not None:  # one line in train.py's out.txt on what DomainBed could not tell the algorithm
            horizon = "" if self.zero_shot else f"horizon {self.total_steps} steps (learning-rate schedule, BMA), "
            print(f"{name}: {horizon}{num_classes} class names from {class_names_source}, "
                  f"{self.num_base_classes} of them trained on; {clip_transforms} image transforms")
            if not self.zero_shot:
                atexit.register(_report_incomplete_run, weakref.ref(self))
                _report_incomplete_run_on_sigterm(weakref.ref(self))
        # the curves of `clipood train`, beside train.py's output (TensorBoard, when it is installed)
        self.scalars = ScalarLog(None if self.zero_shot or run is None or run.output_dir is None
                                 else os.path.join(run.output_dir, "tensorboard"))
        if self.scalars.available:
            atexit.register(self.scalars.close)  # train.py never says it has ended

    def _use_class_names(self, names):
        if self.learner.class_names != names:  # re-encoded only when switching between training and evaluation
            self.learner.set_class_names(names)

    def update(self, minibatches, unlabeled=None):
        if self.zero_shot:
            return {}
        if self.learner.step >= self.total_steps:
            raise RuntimeError(f"{self.algorithm_name} was built for {self.total_steps} steps (the BMA and "
                               "learning-rate horizon) and update() is called once more; run train.py with the "
                               "--steps you mean, or set hparams['steps'] to the number of update() calls")
        images = torch.cat([x for x, _ in minibatches])
        labels = torch.cat([y for _, y in minibatches])
        if self.num_base_classes < self.num_classes and int(labels.max()) >= self.num_base_classes:
            raise ValueError(f"a training batch holds labels of new classes (>= {self.num_base_classes}) under "
                             "open_class_ratio: the training environments must hold base-class images only, as "
                             "domainbed.datasets builds them once the CLIPood plugin is registered")
        self._use_class_names(self.train_class_names)
        stats = {key: float(value) for key, value in self.learner.update(images, labels).items()}
        if self.learner.validation_due:  # SWAD: the loss on the training environments' out-splits
            loss = self.learner.validate(self.holdout_loaders)
            print(f"{self.algorithm_name}: step {self.learner.step} holdout loss {loss!r}; "
                  f"{self.learner.averager.describe()}")
        self.scalars.add_step(stats, self.learner.step)
        # train.py averages each returned value over its checkpoint window: a 0/1 per step averages to the share
        # of the window's steps that were skipped (the learner's running total would average to nothing)
        skipped_total = stats.pop("skipped")
        stats["skipped_share"] = float(skipped_total > self._skipped_total)
        self._skipped_total = skipped_total
        return stats

    def predict(self, x):
        self._use_class_names(self.train_class_names if self._validating() else self.eval_class_names)
        return self.learner.predict(x).to(x.device)

    def _validating(self):
        """Whether train.py is scoring a training environment (see the class docstring)."""
        environment = environment_being_evaluated()
        return self.test_envs is not None and environment is not None and environment not in self.test_envs

    # model.pkl: what rebuilds the predictor (no text tower, no optimizer, no live weights)
    def state_dict(self, *args, **kwargs):
        self._use_class_names(self.eval_class_names)  # the saved predictor classifies among all classes
        learner_state = self.learner.state_dict(include_training_state=False)
        if self._encoder_is_reproducible():
            del learner_state["inference_encoder"]
        return {"clipood_learner": learner_state, "num_base_classes": self.num_base_classes}

    def load_state_dict(self, state_dict, strict=True, assign=False):
        learner_state = dict(state_dict["clipood_learner"])
        if len(learner_state["class_names"]) != self.num_classes:
            raise ValueError(f"model.pkl holds {len(learner_state['class_names'])} classes but this algorithm "
                             f"was built for {self.num_classes}")
        if "inference_encoder" not in learner_state and self._encoder_is_reproducible():
            learner_state["inference_encoder"] = self.learner.inference_encoder.state_dict()
        self.learner.load_state_dict(learner_state)
        self.eval_class_names = list(learner_state["class_names"])
        self.num_base_classes = state_dict["num_base_classes"]
        self.train_class_names = self.eval_class_names[:self.num_base_classes]
        total = learner_state["config"]["total_steps"]
        if total is not None and learner_state["step"] < total:
            warnings.warn(f"this model.pkl was saved after {learner_state['step']} of the {total} steps it was "
                          "built for: a partial run (a BMA over those steps only)", stacklevel=2)

    def _encoder_is_reproducible(self):
        """Zero-shot with named weights (a tag or a file): the encoder is those weights, saved elsewhere already;
        a random init (clip_pretrained null) is not reproducible and is kept."""
        return self.zero_shot and self.learner.config["pretrained"] is not None

    @property
    def class_names(self):
        """All classes, in DomainBed's label order: those ``predict`` classifies among."""
        return list(self.eval_class_names)


_CLASSES_BY_BASE = {}


def build_algorithm_classes(base):
    """{name: class} for ALGORITHM_NAMES, subclasses of ``base`` (DomainBed's Algorithm); cached per base."""
    if base not in _CLASSES_BY_BASE:
        _CLASSES_BY_BASE[base] = {
            name: type(name, (CLIPAlgorithm, base), {
                "__doc__": DESCRIPTIONS[name], "__module__": base.__module__, "__qualname__": name,
                "algorithm_name": name})
            for name in ALGORITHM_NAMES}
    return _CLASSES_BY_BASE[base]

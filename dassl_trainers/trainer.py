"""``CLIPood``: Dassl's TrainerX contract (cfg, batches, checkpoints, evaluator) translated onto
``clipood_plugin.CLIPoodLearner``, which does everything CLIPood-specific (MMS, BMA, prompts, inputs)."""
import os
import os.path as osp
import re

from dassl.data.data_manager import build_data_loader
from dassl.engine import TRAINER_REGISTRY, TrainerX
from clipood_plugin import distributed
from clipood_plugin.files import load_checkpoint
from clipood_plugin.open_classes import num_base_classes
from clipood_plugin.settings import TINY_MODEL, ChangedSettingsError, SettingError, check_settings

from .checkpoint import ResumableLearner
from .config import RUN_SETTINGS, apply_per_dataset_settings, check_cross_settings, config_key, core_settings
from .distributed import decorrelate_rng, quiet_unless_main, split_over_ranks
from .iterations import fixed_length_epoch
from .loaders import DecodedOnDevice, leave_encoded, with_uint8_images
from .open_classes import OPEN_CLASS_RATIO, BaseNewEvaluator, check_labels_contiguous, keep_base

MODEL_NAME = "clipood"  # checkpoints: OUTPUT_DIR/clipood/model.pth.tar-<epoch>


def _preview(names, shown=8):
    return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")


def _check_last_saved_pointer(folder):
    """Dassl's resume reads the name of the last checkpoint from the first line of ``folder``/checkpoint, which
    it writes in place: a run killed meanwhile leaves it empty (and Dassl's resume fails with an IndexError)."""
    pointer = osp.join(folder, "checkpoint")
    if not osp.exists(pointer):
        return
    with open(pointer) as last_saved:
        if last_saved.readline().strip():
            return
    saved = sorted((name for name in os.listdir(folder) if re.fullmatch(r"model\.pth\.tar-\d+", name)),
                   key=lambda name: int(name.rsplit("-", 1)[1]))
    hint = f"write {saved[-1]!r} (the latest checkpoint there) into it" if saved else "no checkpoint is there to name"
    raise ValueError(f"{pointer}, which names the checkpoint to resume from, is empty (the run was killed while "
                     f"Dassl wrote it): {hint}, or start over in another OUTPUT_DIR")


def _register_once(trainer_class):
    if trainer_class.__name__ not in TRAINER_REGISTRY.registered_names():
        TRAINER_REGISTRY.register(trainer_class)
    return trainer_class


@_register_once
class CLIPood(TrainerX):
    """CLIPood (Shu et al., ICML 2023) as a Dassl trainer; settings in cfg.TRAINER.CLIPOOD, the optimizer's
    in cfg.OPTIM (adamw, cosine, no warm-up). The evaluated model is the Beta Moving Average (or the
    averaging of TRAINER.CLIPOOD.AVERAGING).

    Under torchrun with several processes it trains data-parallel (docs/distributed.md): each rank takes
    its share of every batch, and rank 0 alone logs, evaluates and saves checkpoints."""

    def __init__(self, cfg):
        quiet_unless_main()
        cfg, overrides = apply_per_dataset_settings(cfg)
        if overrides:
            print(f"CLIPood: settings of {cfg.DATASET.NAME} (TRAINER.CLIPOOD.PER_DATASET): {', '.join(overrides)}")
        if distributed.launched_world_size() > 1 and cfg.SEED < 0:
            raise ValueError("under torchrun every process must build the same training set (few-shot subsets are "
                             "drawn at random): pass --seed N with N > 0")
        self._owns_process_group = distributed.init_from_env("cuda" if cfg.USE_CUDA else "cpu")
        super().__init__(cfg)
        decorrelate_rng()  # after the datasets are built, which must be the same on every rank
        if self.num_base is not None:
            self.evaluator = BaseNewEvaluator(self.evaluator, self.num_base)

    def check_cfg(self, cfg):
        optim = cfg.OPTIM
        problems = []
        if optim.NAME != "adamw":
            problems.append(f"OPTIM.NAME is {optim.NAME!r}; CLIPood trains with AdamW: set OPTIM.NAME adamw")
        if optim.LR_SCHEDULER != "cosine":
            problems.append(f"OPTIM.LR_SCHEDULER is {optim.LR_SCHEDULER!r}; CLIPood decays the learning rate with "
                            "a per-step cosine schedule: set OPTIM.LR_SCHEDULER cosine")
        if optim.WARMUP_EPOCH > 0:
            problems.append("CLIPood trains without warm-up (the paper's recipe): set OPTIM.WARMUP_EPOCH 0")
        try:
            check_settings(core_settings(cfg), spelled=config_key)
            check_cross_settings(cfg)
        except SettingError as error:
            problems.append(str(error))
        if problems:
            raise ValueError("CLIPood trainer config: " + "; ".join(problems)
                             + " (configs/dassl/trainers/CLIPood/*.yaml have the paper's settings)")

    # ----------------------------------------------------------------- data
    def build_data_loader(self):
        super().build_data_loader()
        missing = [label for label in range(self.num_classes) if label not in self.lab2cname]
        if missing:
            raise ValueError(f"labels {missing} have no training image, so they have no class name for the prompts")
        self.eval_class_names = [self.lab2cname[label] for label in range(self.num_classes)]
        self.train_class_names = self.eval_class_names
        self.num_base = None
        if self.cfg.TRAINER.CLIPOOD.OPEN_CLASSES:
            self._hold_out_new_classes()
        elif self.cfg.DATASET.SUBSAMPLE_CLASSES != "all" and type(self.dm.dataset).__module__.startswith("dassl."):
            raise ValueError(f"{self.cfg.DATASET.NAME} is one of Dassl's datasets, which ignore "
                             "DATASET.SUBSAMPLE_CLASSES; for base/new classes on it set "
                             "TRAINER.CLIPOOD.OPEN_CLASSES True and DATASET.SUBSAMPLE_CLASSES all")
        self.train_loader_x, on_device = leave_encoded(with_uint8_images(self.train_loader_x),
                                                       self.cfg.TRAINER.CLIPOOD.DECODE, self.device)
        check_cross_settings(self.cfg, held_out=self.val_loader is not None)
        iterations = self.cfg.TRAINER.CLIPOOD.ITERS_PER_EPOCH
        if iterations > 0:
            self.train_loader_x = fixed_length_epoch(self.train_loader_x, iterations)
        if distributed.world_size() > 1:
            self.train_loader_x = split_over_ranks(self.train_loader_x)
            print(f"CLIPood: {distributed.world_size()} processes split each batch of "
                  f"{self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE}")
        if on_device is not None:
            self.train_loader_x = DecodedOnDevice(self.train_loader_x, on_device, self.device)
            print(f"CLIPood: training images are decoded and augmented on {self.device} (TRAINER.CLIPOOD.DECODE)")
        print(f"CLIPood: {len(self.train_loader_x)} iterations per epoch; classes the learner trains on: "
              f"{_preview(self.train_class_names)}")

    def _hold_out_new_classes(self):
        cfg, dataset = self.cfg, self.dm.dataset
        if cfg.DATASET.SUBSAMPLE_CLASSES != "all":
            raise ValueError("TRAINER.CLIPOOD.OPEN_CLASSES splits the classes itself, but DATASET.SUBSAMPLE_CLASSES "
                             f"{cfg.DATASET.SUBSAMPLE_CLASSES!r} asks the dataset to (CoOp's datasets do): "
                             "set only one")
        check_labels_contiguous([dataset.train_x], self.num_classes)
        self.num_base = num_base_classes(self.num_classes, OPEN_CLASS_RATIO)
        self.train_class_names = self.eval_class_names[:self.num_base]
        train_x = keep_base(dataset.train_x, self.num_base)
        self.train_loader_x = build_data_loader(
            cfg, sampler_type=cfg.DATALOADER.TRAIN_X.SAMPLER, data_source=train_x,
            batch_size=cfg.DATALOADER.TRAIN_X.BATCH_SIZE, n_domain=cfg.DATALOADER.TRAIN_X.N_DOMAIN,
            n_ins=cfg.DATALOADER.TRAIN_X.N_INS, tfm=self.train_loader_x.dataset.transform, is_train=True)
        if self.val_loader is not None:  # validation images come from the training domains: base classes only
            self.val_loader = build_data_loader(
                cfg, sampler_type=cfg.DATALOADER.TEST.SAMPLER, data_source=keep_base(dataset.val, self.num_base),
                batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, tfm=self.val_loader.dataset.transform, is_train=False)
        print(f"CLIPood open classes: training on {self.num_base} base classes ({len(train_x):,} images), "
              f"{self.num_classes - self.num_base} new classes held out; testing on all {self.num_classes}")

    # ----------------------------------------------------------------- model
    def _learner_settings(self):
        cfg = self.cfg
        learner_settings = {name: value for name, value in core_settings(cfg).items() if name not in RUN_SETTINGS}
        return dict(learner_settings, model_name=cfg.MODEL.BACKBONE.NAME,
                    pretrained=cfg.TRAINER.CLIPOOD.PRETRAINED or None, device=self.device)

    def build_model(self):
        # imported here: registration runs inside every Dassl import and must stay cheap (open_clip is not)
        from clipood_plugin import CLIPoodLearner, WeightsUnavailableError

        total_steps = self.max_epoch * len(self.train_loader_x)  # the cosine and BMA horizons
        try:
            self.learner = CLIPoodLearner(**self._learner_settings(), total_steps=total_steps,
                                          class_names=self.train_class_names)
        except WeightsUnavailableError as error:
            raise error.worded_for("TRAINER.CLIPOOD.PRETRAINED {path}",
                                   f'MODEL.BACKBONE.NAME {TINY_MODEL} TRAINER.CLIPOOD.PRETRAINED ""',
                                   "TRAINER.CLIPOOD.IMAGE_NORM {norm}") from None
        image_input = self.learner.image_input
        print(f"CLIPood: {self.learner.config['model_name']} ({self.learner.config['pretrained'] or 'random init'}), "
              f"{total_steps} steps, precision {self.learner.precision}, templates {self.learner.config['templates']}, "
              f"input {image_input.describe()}")
        if tuple(self.cfg.INPUT.SIZE) != image_input.size:  # the learner maps Dassl's images onto the model's size
            print(f"CLIPood: Dassl's images of INPUT.SIZE {tuple(self.cfg.INPUT.SIZE)} are resized to the model's "
                  f"{image_input.size} ({image_input.interpolation}); set INPUT.SIZE {image_input.size} to crop "
                  "them at the model's resolution")
        self.register_model(MODEL_NAME, ResumableLearner(self.learner))

    def _use_class_names(self, names):
        if self.learner.class_names != names:
            self.learner.set_class_names(names)

    # ----------------------------------------------------------------- train / test
    def before_epoch(self):
        self._use_class_names(self.train_class_names)

    def forward_backward(self, batch):
        stats = self.learner.update(batch["img"], batch["label"])  # the learner moves them to its device
        if self.learner.validation_due:  # SWAD: the loss on the validation split (held-out training-domain images)
            loss = self.learner.validate([((held["img"], held["label"]) for held in self.val_loader)])
            print(f"CLIPood: step {self.learner.step} validation loss {loss!r}; {self.learner.averager.describe()}")
        return {"loss": stats["loss"], "acc": 100.0 * stats["acc"]}

    def get_current_lr(self, names=None):
        return self.learner.optimizer.param_groups[0]["lr"]

    def model_inference(self, input):
        return self.learner.predict(input)

    def test(self, split=None):
        if not distributed.is_main():  # the weights are the same on every rank: rank 0 evaluates
            return None
        self._use_class_names(self.eval_class_names)
        return super().test(split)

    # ----------------------------------------------------------------- ranks > 0: train only
    def init_writer(self, log_dir):
        if distributed.is_main():
            super().init_writer(log_dir)

    def after_epoch(self):  # validation and checkpoints
        if distributed.is_main():
            super().after_epoch()

    def after_train(self):  # the final test
        if distributed.is_main():
            super().after_train()
        if self._owns_process_group:
            distributed.shutdown()

    # ----------------------------------------------------------------- checkpoints
    def resume_model_if_exist(self, directory):
        _check_last_saved_pointer(osp.join(directory, MODEL_NAME))
        try:
            start_epoch = super().resume_model_if_exist(directory)
        except ChangedSettingsError as error:
            raise error.respelled(config_key, f"resume with the settings the run started with, or start a new run "
                                              f"in another OUTPUT_DIR than {directory}") from None
        expected = start_epoch * len(self.train_loader_x)
        if self.learner.step != expected:
            raise RuntimeError(f"the checkpoint in {directory} is at step {self.learner.step}, but epoch {start_epoch} "
                               f"of this run ends at step {expected}: resume with the ITERS_PER_EPOCH and batch size "
                               "the run started with")
        return start_epoch

    def load_model(self, directory, epoch=None):
        """Dassl's load_model for the learner (and without its crash on checkpoints saved with
        val_result None). Without ``epoch``: model-best.pth.tar if there is one, else the last saved
        checkpoint. Text features are then computed from this run's class names and templates, so a
        base-trained model is evaluated on the new classes of ``DATASET.SUBSAMPLE_CLASSES new``."""
        if not directory:
            print("Note: load_model() got no directory; evaluating the model as built")
            return
        from clipood_plugin.checkpoint_format import inference_state

        path = self._checkpoint_path(directory, epoch)
        checkpoint = load_checkpoint(path, numpy_scalars=True)  # as data: nothing in the file runs
        state = checkpoint["state_dict"]["learner"]
        if self._changed_build_settings(state["config"]):
            self._rebuild_learner(state["config"])
        # the predictor only: its class count may differ from this run's (base-trained, evaluated on new classes)
        self.learner.load_state_dict(inference_state(state))
        self.learner.set_class_names(self.eval_class_names)
        print(f"Loaded {path} (epoch {checkpoint['epoch']}, step {self.learner.step}); evaluating on "
              f"{len(self.learner.class_names)} classes: {_preview(self.learner.class_names)}")

    def _checkpoint_path(self, directory, epoch):
        folder = osp.join(directory, MODEL_NAME)
        if epoch is not None:
            name = f"model.pth.tar-{epoch}"
        elif osp.exists(osp.join(folder, "model-best.pth.tar")):
            name = "model-best.pth.tar"
        elif osp.exists(osp.join(folder, "checkpoint")):
            with open(osp.join(folder, "checkpoint")) as last_saved:
                name = last_saved.readline().strip()
        else:
            raise FileNotFoundError(f"no CLIPood checkpoint in {folder}: --model-dir must be the --output-dir of a "
                                    "CLIPood training run")
        path = osp.join(folder, name)
        if not osp.exists(path):
            raise FileNotFoundError(f"no checkpoint at {path} (check --load-epoch)")
        return path

    def _changed_build_settings(self, checkpoint_config):
        """{build key: the checkpoint's value} where it differs from this run's learner."""
        from clipood_plugin.checkpoint_format import changed_build_settings

        return {name: saved for name, saved, _ in changed_build_settings(checkpoint_config, self.learner.config)}

    def _rebuild_learner(self, checkpoint_config):
        """Eval-only with other settings than training (e.g. ImageNet-trained, ImageNet-A evaluated, whose
        epochs differ): build the learner as the checkpoint's, with this run's templates."""
        from clipood_plugin import CLIPoodLearner

        print(f"CLIPood: rebuilding the learner with the checkpoint's settings "
              f"{self._changed_build_settings(checkpoint_config)}")
        settings = {**self._learner_settings(), **{k: v for k, v in checkpoint_config.items() if k != "templates"}}
        self.learner = CLIPoodLearner(**settings, class_names=self.eval_class_names)
        self._models[MODEL_NAME].learner = self.learner

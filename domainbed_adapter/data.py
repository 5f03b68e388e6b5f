"""What the CLIP algorithms' hparams ask of DomainBed's datasets, done while train.py builds them.

DomainBed's train.py builds the dataset itself (``vars(datasets)[args.dataset](data_dir, test_envs,
hparams)``), splits every environment, builds its loaders and only then the algorithm, which never sees
the data. The dataset constructor is the one place that gets the run's hparams before any loader
exists, so registration wraps the constructor of every class in ``domainbed.datasets.DATASETS``
(``patch_datasets``); after DomainBed's own ``__init__`` it applies two hparams:

- ``clip_transforms``: ``"domainbed"`` keeps DomainBed's transforms; ``"clipood"`` gives every
  environment the authors' pipeline (training environments with ``data_augmentation``:
  RandomResizedCrop(scale 0.7-1) + horizontal flip; others: Resize + CenterCrop; bilinear), as their edit of
  DomainBed's datasets.py did, at the model's size and normalization (theirs: 224 and OpenAI's, the input of
  their ViT-B/16); ``"model"`` gives the model's own input: the paper's augmentation at its size and
  interpolation for training, open_clip's preprocessing of the weights for the others
  (``clipood_plugin.image_transforms.input_transforms``). With both, training crops are uint8 pixels that the learner
  normalizes on its device, cropped by torch from the file's pixels (JPEGs decoded by torchvision: the
  environment's ``loader`` is ``clipood_plugin.image_files.read_pixels``); the others are normalized floats. The model's input is found from the hparams
  (clip_model, clip_pretrained, clip_image_norm) without building the model.
- ``open_class_ratio`` > 0 (in the wild): each training environment keeps its base-class images only
  (label < ``num_base_classes``), so DomainBed's split and loaders, built afterwards, hold base classes
  only and every batch has ``batch_size`` of them. Test environments keep every class.

In a train.py run of a CLIP algorithm, the dataset's ``N_WORKERS`` (the processes of each of train.py's loaders)
is also capped at the CPUs the process may use, which is what torch's DataLoader warns about otherwise.

With the defaults the dataset is left as DomainBed built it. The dataset records what was applied
(``PREPARED_ATTRIBUTE``) and the algorithm checks it against its hparams, so a dataset built without
the wrapper is an error, not a silent mismatch.
"""
import functools
import os

import torch

from clipood_plugin.open_classes import num_base_classes

from .hparams import ALGORITHM_NAMES, check_hparams
from .run_context import current_train_run

CLIP_TRANSFORMS_CHOICES = ("domainbed", "clipood", "model")
PREPARED_ATTRIBUTE = "clipood_data_settings"


def data_settings(hparams):
    """(clip_transforms, open_class_ratio) an hparams dict asks of the dataset."""
    choice = hparams.get("clip_transforms") or "domainbed"
    if choice not in CLIP_TRANSFORMS_CHOICES:
        raise ValueError(f"clip_transforms is {choice!r}; choose one of {CLIP_TRANSFORMS_CHOICES}")
    return choice, float(hparams.get("open_class_ratio") or 0.0)


DEFAULT_SETTINGS = data_settings({})


def authors_transforms(image_input):
    """(training, evaluation) transforms of the authors' pipeline at the size and normalization of the model's
    input: the paper's augmentation (image_transforms.input_transforms: uint8 crops) with torchvision's default bilinear
    interpolation, and Resize + CenterCrop (normalized floats)."""
    import dataclasses

    from torchvision import transforms

    from clipood_plugin.image_transforms import input_transforms

    training, _ = input_transforms(dataclasses.replace(image_input, interpolation="bilinear"))
    evaluation = transforms.Compose([transforms.Resize(image_input.size[0]), transforms.CenterCrop(image_input.size),
                                     transforms.ToTensor(), transforms.Normalize(image_input.mean, image_input.std)])
    return training, evaluation


def model_input(hparams):
    """The ImageInput of the model the CLIP algorithm will build from ``hparams``."""
    from clipood_plugin.backbone import weights_image_input
    from clipood_plugin.image_input import AUTO

    return weights_image_input(hparams["clip_model"], hparams["clip_pretrained"],
                               hparams.get("clip_image_norm", AUTO))


class BaseClassSubset(torch.utils.data.Subset):
    """The base-class samples of an environment; its ``classes`` (label -> name) stay the environment's."""

    @property
    def classes(self):
        return self.dataset.classes


def environment_labels(environment):
    """Labels of every sample of a DomainBed environment, read without loading images where possible."""
    if hasattr(environment, "targets"):  # ImageFolder
        return torch.as_tensor(environment.targets).long()
    if isinstance(environment, torch.utils.data.TensorDataset):  # Debug, MNIST variants
        return environment.tensors[1].long()
    return torch.as_tensor([int(label) for _, label in environment]).long()  # reads each sample once


def _check_batches_fill(dataset, train_envs, hparams):
    """DomainBed's training loader draws ``batch_size`` with drop_last from the in-split; one smaller than
    that never yields a batch and train.py hangs. Filtering makes environments smaller: say so instead."""
    run = current_train_run()
    if run is None or hparams.get("class_balanced"):  # a weighted sampler always fills its batches
        return
    for i in train_envs:
        size = len(dataset.datasets[i])
        in_split = size - int(size * run.holdout_fraction)
        if in_split < hparams["batch_size"]:
            raise ValueError(f"environment {i} has {in_split} base-class training images after the holdout, fewer "
                             f"than batch_size {hparams['batch_size']}: DomainBed's loader would never fill a batch. "
                             "Lower batch_size (--hparams '{\"batch_size\": N}')")


def usable_cpus():
    """The CPUs this process may run on (its affinity, as torch's DataLoader counts them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def fit_workers_to_cpus(dataset):
    """train.py gives each of its loaders ``dataset.N_WORKERS`` processes (8 for the image datasets); more than
    the CPUs there are only slows the run down, and DomainBed's loaders each warn about it. At most one per
    CPU, on this dataset object only."""
    dataset.N_WORKERS = min(dataset.N_WORKERS, usable_cpus())


def use_transform(environment, transform):
    """Give a DomainBed environment ``transform``; an ImageFolder (with a ``loader``) whose transform takes uint8
    pixels also gets its files decoded straight to them (``clipood_plugin.image_files.read_pixels``)."""
    from clipood_plugin.image_files import read_pixels, reads_pixels

    environment.transform = transform
    if reads_pixels(transform) and hasattr(environment, "loader"):
        environment.loader = read_pixels


def prepare_dataset(dataset, test_envs, hparams):
    """Apply ``clip_transforms`` and ``open_class_ratio`` to a DomainBed dataset just built (see module doc).
    In a train.py run of a CLIP algorithm its hparams are checked first: train.py builds its loaders (from
    batch_size) before the algorithm."""
    run = current_train_run()
    if run is not None and run.algorithm in ALGORITHM_NAMES:
        check_hparams(run.algorithm, hparams, run.dataset_name)
        fit_workers_to_cpus(dataset)
    choice, ratio = data_settings(hparams)
    train_envs = [i for i in range(len(dataset.datasets)) if i not in test_envs]
    if choice != "domainbed":
        lacking = [i for i, env in enumerate(dataset.datasets) if not hasattr(env, "transform")]
        if lacking:
            raise ValueError(f"clip_transforms {choice!r} replaces the image transforms of each environment, but the "
                             f"environments {lacking} of {type(dataset).__name__} have none (tensors or nested "
                             "datasets): use clip_transforms 'domainbed' for this dataset")
        from clipood_plugin.image_transforms import input_transforms

        training, evaluation = (authors_transforms if choice == "clipood" else input_transforms)(model_input(hparams))
        augment = hparams["data_augmentation"]
        for i, environment in enumerate(dataset.datasets):
            use_transform(environment, training if augment and i in train_envs else evaluation)
    if ratio:
        num_base = num_base_classes(dataset.num_classes, ratio)
        for i in train_envs:
            keep = torch.nonzero(environment_labels(dataset.datasets[i]) < num_base).flatten().tolist()
            dataset.datasets[i] = BaseClassSubset(dataset.datasets[i], keep)
        _check_batches_fill(dataset, train_envs, hparams)
    setattr(dataset, PREPARED_ATTRIBUTE, (choice, ratio))


def check_prepared(dataset, hparams):
    """Raise unless ``dataset`` was built with what ``hparams`` ask of it (see ``prepare_dataset``)."""
    wanted = data_settings(hparams)
    applied = getattr(dataset, PREPARED_ATTRIBUTE, DEFAULT_SETTINGS)
    if applied != wanted:
        raise ValueError(
            f"the hparams ask for clip_transforms {wanted[0]!r} and open_class_ratio {wanted[1]} but the "
            f"{type(dataset).__name__} dataset was built with {applied[0]!r} and {applied[1]}: it was not built "
            "through a registered domainbed.datasets class (run `python -m domainbed_adapter.train` or call "
            "domainbed_adapter.register() before DomainBed builds the dataset)")


def _preparing_init(cls, original):
    @functools.wraps(original)
    def __init__(self, root, test_envs, hparams):
        original(self, root, test_envs, hparams)
        if type(self) is cls:  # once, after the whole DomainBed constructor
            prepare_dataset(self, test_envs, hparams)

    __init__.clipood_wrapped = True
    return __init__


def patch_datasets(module):
    """Wrap the constructor of every class named in ``domainbed.datasets.DATASETS`` (idempotent)."""
    for name in module.DATASETS:
        cls = getattr(module, name, None)
        if not isinstance(cls, type) or getattr(cls.__dict__.get("__init__"), "clipood_wrapped", False):
            continue
        cls.__init__ = _preparing_init(cls, cls.__init__)

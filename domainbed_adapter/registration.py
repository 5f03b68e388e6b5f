"""Putting the CLIP algorithms, their hparams, their data preparation and the Slurm launcher into
DomainBed's modules (no edit to its files).

DomainBed has no plugin mechanism: ``get_algorithm_class`` looks names up in ``domainbed.algorithms``'
globals, sweep.py defaults to its ``ALGORITHMS`` list, every hparam comes from
``hparams_registry._hparams``, train.py builds its dataset from the classes in ``domainbed.datasets``
and sweep.py finds launchers in ``command_launchers.REGISTRY``. Patching those is what registration
means. Each patch is idempotent and only touches modules that have finished importing.
"""
import functools
import sys
import warnings

from . import slurm
from .algorithms import CLIPAlgorithm, build_algorithm_classes
from .class_names import FOLDER_CLASS_NAMES
from .data import patch_datasets
from .hparams import ALGORITHM_NAMES, clipood_hparams
from .run_context import current_train_run


def patch_algorithms(module):
    """Add CLIPood, CLIPERM and CLIPZeroShot to ``domainbed.algorithms`` and its ALGORITHMS list."""
    for name, cls in build_algorithm_classes(module.Algorithm).items():
        existing = getattr(module, name, None)
        ours = isinstance(existing, type) and issubclass(existing, CLIPAlgorithm)  # e.g. from before a reload
        if existing is not None and not ours:
            warnings.warn(f"domainbed.algorithms already defines {name}; the CLIPood plugin leaves it in place")
            continue
        setattr(module, name, cls)
        if name not in module.ALGORITHMS:
            module.ALGORITHMS.append(name)


def patch_hparams_registry(module):
    """Wrap ``hparams_registry._hparams`` so the CLIP algorithms get their entries (default and random)."""
    original = module._hparams
    if getattr(original, "clipood_wrapped", False):
        return

    @functools.wraps(original)
    def _hparams(algorithm, dataset, random_seed):
        hparams = original(algorithm, dataset, random_seed)
        if algorithm in ALGORITHM_NAMES:
            hparams.update(clipood_hparams(algorithm, dataset, random_seed))
            if _class_folders_will_name_the_classes(dataset):
                hparams["class_names"] = (None, None)  # (default, random) unset: train.py prints them before it
                # has loaded the folders
        return hparams

    _hparams.clipood_wrapped = True
    module._hparams = _hparams


def _class_folders_will_name_the_classes(dataset):
    """True in a train.py run of a folder dataset (PACS, VLCS, ...) not yet loaded: its class folders, not the
    registry's table, give the class names (class_names.resolve_class_names), so the table is left out of the
    hparams train.py prints and records until the algorithm resolves them."""
    run = current_train_run()
    return run is not None and run.dataset is None and run.dataset_name == dataset and dataset in FOLDER_CLASS_NAMES


def patch_command_launchers(module):
    """Add the Slurm launcher to ``domainbed.command_launchers.REGISTRY`` as "slurm"."""
    existing = module.REGISTRY.get(slurm.NAME)
    if existing is not None and getattr(existing, "__module__", None) != slurm.__name__:
        warnings.warn(f"DomainBed already has a {slurm.NAME!r} command launcher; the CLIPood plugin leaves it in place")
        return
    module.REGISTRY[slurm.NAME] = slurm.slurm_launcher


def _finished(module_name, *attributes):
    """The module if it is imported and defines ``attributes`` (i.e. not caught mid-import)."""
    module = sys.modules.get(module_name)
    if module is not None and all(hasattr(module, attribute) for attribute in attributes):
        return module
    return None


def register_loaded():
    """Patch whichever DomainBed modules are already imported; import nothing. Cheap and idempotent:
    the post-import hook calls it each time a watched DomainBed module finishes importing."""
    algorithms = _finished("domainbed.algorithms", "Algorithm", "ALGORITHMS")
    if algorithms is not None:
        patch_algorithms(algorithms)
    registry = _finished("domainbed.hparams_registry", "_hparams")
    if registry is not None:
        patch_hparams_registry(registry)
    launchers = _finished("domainbed.command_launchers", "REGISTRY")
    if launchers is not None:
        patch_command_launchers(launchers)
    datasets = _finished("domainbed.datasets", "DATASETS")
    if datasets is not None:
        patch_datasets(datasets)


def register():
    """Import DomainBed's algorithms, hparams registry, datasets and command launchers and patch them
    (works without the .pth hook)."""
    try:
        import domainbed.algorithms  # noqa: F401
        import domainbed.command_launchers  # noqa: F401
        import domainbed.datasets  # noqa: F401
        import domainbed.hparams_registry  # noqa: F401
    except ImportError as error:
        raise ImportError("DomainBed is not importable: run from the root of a DomainBed checkout or put it on "
                          f"PYTHONPATH ({error})") from error
    register_loaded()

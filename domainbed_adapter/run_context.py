"""What a DomainBed algorithm cannot be told: which run it is part of.

train.py builds the algorithm with (input_shape, num_classes, num_domains, hparams) only, yet the BMA
and cosine horizons need the number of steps it will run and the prompts need the class names. Both are
in train.py's namespace when it builds the algorithm: ``args`` (parsed command line) and ``dataset``
(the loaded dataset object); its loop runs exactly ``args.steps or dataset.N_STEPS`` updates, and its
training loaders draw from the ``1 - args.holdout_fraction`` "in" share of each environment. Its evaluation
loop (``for name, loader, weights in evals``) scores one split at a time, named ``env{i}_{in|out|uda}``
in its loop variable ``name``: which environment a ``predict`` call is scoring is read from there. While the
dataset is being built (``domainbed_adapter.data``) ``args`` exists and ``dataset`` does not yet. This module
finds them in the ``__main__`` module when that is DomainBed's train script (``python -m
domainbed.scripts.train``, ``python domainbed/scripts/train.py`` or ``python -m domainbed_adapter.train``).
"""
import dataclasses
import os
import re
import sys
import warnings

TRAIN_MODULE = "domainbed.scripts.train"
TRAIN_SCRIPT_TAIL = "domainbed/scripts/train.py"


@dataclasses.dataclass(frozen=True)
class TrainRun:
    dataset_name: str
    n_steps: int  # the number of update() calls train.py makes
    dataset: object  # the loaded dataset, or None
    holdout_fraction: float = 0.2  # share of each environment train.py holds out of training (its default)
    test_envs: tuple = ()  # the environments train.py holds out for testing
    algorithm: str = None  # its --algorithm
    output_dir: str = None  # train.py's --output_dir (its results.jsonl, model.pkl)


def _is_train_script(module):
    spec = getattr(module, "__spec__", None)
    if getattr(spec, "name", None) == TRAIN_MODULE:
        return True
    path = getattr(module, "__file__", None) or ""
    return os.path.abspath(path).replace(os.sep, "/").endswith(TRAIN_SCRIPT_TAIL)


def current_train_run():
    """The DomainBed train run this process is executing, or None outside one."""
    main = sys.modules.get("__main__")
    if main is None or not _is_train_script(main):
        return None
    args, dataset = getattr(main, "args", None), getattr(main, "dataset", None)
    if args is None or not hasattr(args, "dataset") or not hasattr(args, "steps"):
        warnings.warn("inside DomainBed's train script but its `args` (with .dataset and .steps) are not visible: "
                      "this DomainBed differs from the one the adapter knows. Pass the horizon and the classes: "
                      "--hparams '{\"steps\": N, \"class_names\": [...]}'", stacklevel=2)
        return None
    n_steps = args.steps or getattr(dataset, "N_STEPS", None)
    if n_steps is None:  # dataset not built yet: read the class attribute train.py would use
        from domainbed import datasets
        n_steps = datasets.get_dataset_class(args.dataset).N_STEPS
    return TrainRun(dataset_name=args.dataset, n_steps=int(n_steps), dataset=dataset,
                    holdout_fraction=getattr(args, "holdout_fraction", TrainRun.holdout_fraction),
                    test_envs=tuple(getattr(args, "test_envs", None) or ()),
                    algorithm=getattr(args, "algorithm", None),
                    output_dir=getattr(args, "output_dir", None))


def training_holdout_loaders():
    """train.py's evaluation loaders of the training environments' out-splits (the share of each that it holds
    out of training, by which DomainBed selects models on training-domain validation), those that hold images;
    None outside train.py. train.py builds them (``eval_loaders``, named in ``eval_loader_names``) before the
    algorithm."""
    main = sys.modules.get("__main__")
    if main is None or not _is_train_script(main):
        return None
    names, loaders, args = (getattr(main, key, None) for key in ("eval_loader_names", "eval_loaders", "args"))
    if names is None or loaders is None:
        return None
    test_envs = set(getattr(args, "test_envs", None) or ())
    return [loader for name, loader in zip(names, loaders)
            if (match := re.fullmatch(r"env(\d+)_out", name)) and int(match.group(1)) not in test_envs and len(loader)]


def environment_being_evaluated():
    """The index i of the environment whose split train.py's evaluation loop is scoring (its loop variable
    ``name``, "env{i}_in", "env{i}_out" or "env{i}_uda"), or None outside train.py. Only its evaluation
    loop calls ``predict``, so a ``predict`` inside train.py is scoring that environment."""
    main = sys.modules.get("__main__")
    if main is None or not _is_train_script(main):
        return None
    match = re.fullmatch(r"env(\d+)_(in|out|uda)", str(getattr(main, "name", "")))
    return int(match.group(1)) if match else None

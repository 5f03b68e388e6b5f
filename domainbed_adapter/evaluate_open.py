"""In-the-wild protocol (paper Table 4): base-class, new-class and total accuracy per environment.

``python -m domainbed_adapter.evaluate_open --input_dir RUN_OR_SWEEP_DIR [--data_dir D] [--split S]``

For every model.pkl of a CLIP algorithm trained with ``open_class_ratio > 0`` it rebuilds the dataset
and the in/out splits exactly as train.py did (same seeds, base-class images only in the training
environments), classifies every image over all classes (base + new, as the authors evaluate), and
writes ``open_class_results.json`` next to the model: ``env{i}_{split}_{base,new,total}_acc`` and the
sample counts behind them, for the splits ``in``, ``out`` and ``all`` (both together: the whole
environment, the authors' in-the-wild test set).
"""
import argparse
import glob
import os
import random
import sys

import numpy as np
import torch
from clipood_plugin.files import write_json
from clipood_plugin.open_classes import BaseNewAccuracy, harmonic_mean
from clipood_plugin.settings import DataError

from .checkpoint import load_algorithm, read_model_pkl
from .data import check_prepared
from .sweep_runs import OPEN_CLASS_RESULTS as RESULTS_FILE, OPEN_SPLITS as SPLITS


def _train_splits(dataset, args):
    """{'env{i}_in': split, 'env{i}_out': split} as train.py builds them (its seeds and holdout)."""
    from domainbed.lib import misc
    splits = {}
    for env_i, env in enumerate(dataset):
        out, in_ = misc.split_dataset(env, int(len(env) * args["holdout_fraction"]),
                                      misc.seed_hash(args["trial_seed"], env_i))
        if env_i in args["test_envs"]:
            _, in_ = misc.split_dataset(in_, int(len(in_) * args.get("uda_holdout_fraction", 0)),
                                        misc.seed_hash(args["trial_seed"], env_i))
        splits[f"env{env_i}_in"], splits[f"env{env_i}_out"] = in_, out
    return splits


@torch.no_grad()
def accumulate(algorithm, loader, *accuracies):
    """Feed every batch's predictions (argmax over all classes) to each ``BaseNewAccuracy``."""
    algorithm.eval()
    for images, labels in loader:
        logits = algorithm.predict(images)
        for accuracy in accuracies:
            accuracy.update(logits, labels)


def evaluate_run(model_pkl, data_dir=None, num_workers=None):
    """Base/new accuracies of one run; writes them next to its model.pkl and returns them."""
    from domainbed import datasets
    algorithm, saved = load_algorithm(model_pkl)
    if algorithm.num_base_classes == algorithm.num_classes:
        raise ValueError(f"{model_pkl} was trained with open_class_ratio 0: every class is a base class")
    args, hparams = saved["args"], saved["model_hparams"]
    # train.py seeds everything before building the dataset (the Debug datasets are random draws)
    random.seed(args["seed"])
    np.random.seed(args["seed"])
    torch.manual_seed(args["seed"])
    dataset = datasets.get_dataset_class(args["dataset"])(data_dir or args["data_dir"], args["test_envs"], hparams)
    check_prepared(dataset, hparams)
    workers = dataset.N_WORKERS if num_workers is None else num_workers
    accuracies = {}
    for name, split in _train_splits(dataset, args).items():
        whole_environment = accuracies.setdefault(name.rsplit("_", 1)[0] + "_all",
                                                  BaseNewAccuracy(algorithm.num_base_classes))
        accuracies[name] = BaseNewAccuracy(algorithm.num_base_classes)
        loader = torch.utils.data.DataLoader(split, batch_size=64, num_workers=workers)
        accumulate(algorithm, loader, accuracies[name], whole_environment)
    results = {"num_base_classes": algorithm.num_base_classes, "num_classes": algorithm.num_classes,
               "test_envs": args["test_envs"]}
    for name, accuracy in accuracies.items():
        for key, value in accuracy.result().items():
            if key != "harmonic_mean":  # recomputed from the split the table reports
                results[f"{name}_{key}"] = value
    write_json(results, os.path.join(os.path.dirname(model_pkl), RESULTS_FILE))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input_dir", required=True, help="a train output_dir or a sweep output_dir")
    parser.add_argument("--data_dir", help="override the data_dir recorded in model.pkl")
    parser.add_argument("--num_workers", type=int, help="data loader workers (default: the dataset's N_WORKERS)")
    parser.add_argument("--split", choices=SPLITS, default="in",
                        help="split of the test environments printed: in (DomainBed's test split, the default), "
                             "out (the holdout split) or all (the whole environment, the authors' Table 4 test set); "
                             "the json file has all three")
    args = parser.parse_args(argv)
    from .registration import register
    register()
    paths = sorted(glob.glob(os.path.join(args.input_dir, "model.pkl"))
                   + glob.glob(os.path.join(args.input_dir, "*", "model.pkl")))
    print(f"{'run':34} {'test env':>8} {'base':>7} {'new':>7} {'H':>7} {'total':>7}")
    unreadable = 0
    for path in paths:
        try:
            saved = read_model_pkl(path)
        except DataError as error:  # one bad file does not stop the rest of a sweep
            print(f"skipped: {error}", file=sys.stderr)
            unreadable += 1
            continue
        if not saved["model_hparams"].get("open_class_ratio"):
            continue
        results = evaluate_run(path, args.data_dir, args.num_workers)
        for env in saved["args"]["test_envs"]:
            base, new, total = (results[f"env{env}_{args.split}_{kind}_acc"] for kind in ("base", "new", "total"))
            print(f"{os.path.basename(os.path.dirname(path))[:34]:34} {env:>8} {100 * base:7.1f} {100 * new:7.1f} "
                  f"{100 * harmonic_mean(base, new):7.1f} {100 * total:7.1f}")
    return 2 if unreadable else 0


if __name__ == "__main__":
    sys.exit(main())

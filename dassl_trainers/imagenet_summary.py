"""``python -m dassl_trainers.imagenet_summary OUTROOT [--paper] [--out PREFIX_OR_FOLDER]``: ImageNet and
its variants (ImageNet-V2, -Sketch, -A, -R, evaluated with the model trained on ImageNet) and their
average, mean ± standard deviation over seeds, in the layout of Table 2 of the paper. Markdown and CSV are
written next to the terminal table (default: OUTROOT/imagenet_summary.md and .csv).

Every run folder under OUTROOT whose path names one of CoOp's dataset configs (imagenet, imagenetv2,
imagenet_sketch, imagenet_a, imagenet_r) and a seed (``seed<k>``) counts, as CoCoOp's xd_train.sh and
xd_test.sh lay them out: ``imagenet/<trainer>/<cfg>/seed1`` (training: ImageNet is the test after
"Finish training") and ``evaluation/<trainer>/<cfg>/imagenetv2/seed1`` (eval-only runs). OOD avg is the
mean of the four variants within each seed. Missing or unfinished seeds are listed, and so are runs whose
log cannot be used (``run_logs.run_accuracy``), with the reason; the exit code is 1 then.
"""
import argparse
import re
import sys
from pathlib import Path

from clipood_plugin.results_table import (Cell, Report, ResultsError, Row, Table, UnusableRun, add_output_arguments,
                                          complete_means, print_and_write, published_rows)

from .run_logs import EVALUATION, TRAINING, run_accuracy

# CoOp's dataset config names -> Table 2's columns, in its order
TABLE2_DATASETS = {"imagenet": "ImageNet", "imagenetv2": "ImageNet-V2", "imagenet_sketch": "ImageNet-Sketch",
                   "imagenet_a": "ImageNet-A", "imagenet_r": "ImageNet-R"}
SEED = re.compile(r"seed\d+")


def collect(out_root):
    """{dataset: {seed: (accuracy, None while unfinished, or the UnusableRun; run folder)}} of the Table 2 runs
    under out_root."""
    runs = {}
    root = Path(out_root)
    for log in sorted(root.rglob("log.txt")):
        parts = log.parent.relative_to(root).parts
        datasets = [part for part in parts if part in TABLE2_DATASETS]
        seeds = [part for part in parts if SEED.fullmatch(part)]
        if not datasets or not seeds:
            continue
        dataset_runs = runs.setdefault(datasets[-1], {})
        if seeds[-1] in dataset_runs:
            raise ResultsError(f"two {datasets[-1]} runs for {seeds[-1]}: {dataset_runs[seeds[-1]][1]} and "
                               f"{log.parent}; give the folder of one experiment")
        try:  # ImageNet is the test after training; the variants are eval-only runs of that model
            accuracy = run_accuracy(log.parent, TRAINING if datasets[-1] == "imagenet" else EVALUATION)
        except UnusableRun as reason:
            accuracy = reason
        dataset_runs[seeds[-1]] = (accuracy, log.parent)
    return runs


def summarize(runs, paper=False, label="ours"):
    """The Report: one row with Table 2's columns (and the published rows), and the missing seeds."""
    seeds = sorted(set().union(*runs.values()), key=lambda seed: int(seed[len("seed"):]))
    accuracies, missing = {}, []
    for dataset in TABLE2_DATASETS:
        for seed in seeds:
            accuracy, folder = runs.get(dataset, {}).get(seed, (None, None))
            if isinstance(accuracy, UnusableRun):
                missing.append(f"{dataset} {seed}: left out: {accuracy}")
            elif accuracy is None:
                missing.append(f"{dataset} {seed}: " + (f"unfinished ({folder})" if folder else "no run"))
            else:
                accuracies.setdefault(TABLE2_DATASETS[dataset], {})[seed] = accuracy
    columns = list(TABLE2_DATASETS.values())
    cells = {column: Cell.over(accuracies.get(column, {}).values(), len(seeds)) for column in columns}
    cells["OOD avg"] = Cell.over(complete_means([accuracies.get(column, {}) for column in columns[1:]]).values(),
                                 len(seeds))
    table = Table("Table 2 layout: ImageNet and its variants (trained on ImageNet)", columns + ["OOD avg"],
                  [Row(label, cells)] + (published_rows(2) if paper else []),
                  notes=["OOD avg: mean over ImageNet-V2, -Sketch, -A and -R within each seed"])
    return Report([table], missing, digits=2)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m dassl_trainers.imagenet_summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_root", help="the folder holding the ImageNet training and the variants' evaluations")
    parser.add_argument("--label", default="ours", help="the name of our row (default: ours)")
    add_output_arguments(parser, "OUT_ROOT/imagenet_summary")
    args = parser.parse_args(argv)
    try:
        runs = collect(args.out_root)
        if not runs:
            raise ResultsError(f"no log.txt under {args.out_root} in a seed<k> folder below one named "
                               f"{', '.join(TABLE2_DATASETS)}: give the output folder of the Table 2 runs")
    except ResultsError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return print_and_write(summarize(runs, args.paper, args.label), args.out, args.out_root, "imagenet_summary",
                           args.overwrite)


if __name__ == "__main__":
    sys.exit(main())

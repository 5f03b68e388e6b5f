"""``python -m dassl_trainers.base2new_summary OUTROOT [--paper] [--out PREFIX_OR_FOLDER]``: Base, New and H
per dataset and on average, mean ± standard deviation over seeds, in the layout of Table 3 of the paper,
from the logs of a base-to-new run. Markdown and CSV are written next to the terminal table (default:
OUTROOT/base2new_summary.md and .csv).

Layout read (configs/dassl/base2new.sh writes it; CoOp's scripts write a deeper one, also read):
OUTROOT/train_base/<dataset>/.../seed<k>/log.txt*   base training; Base = its final test accuracy
OUTROOT/test_new/<dataset>/.../seed<k>/log.txt*     eval-only on the new classes; New = its accuracy
A seed counts when both are there (each log read by ``run_logs.run_accuracy``: a run whose log cannot be
used is listed with the reason and left out, as is a log outside a <dataset>/<run> folder; the exit code
is 1 then, or when seeds are missing). Per dataset, Base and New are means over seeds and H is the harmonic
mean of those means (± the standard deviation of the per-seed H); the Average row averages Base and New
over the datasets within each seed and takes H of those averages (as CoCoOp and CLIPood do). Seeds that
are missing or unfinished are listed, and the cells they leave out are marked.
"""
import argparse
import sys
from pathlib import Path
from statistics import fmean

from clipood_plugin.open_classes import harmonic_mean
from clipood_plugin.results_table import (Cell, Report, Row, Table, UnusableRun, add_output_arguments,
                                          complete_means, print_and_write, published_rows)

from .run_logs import EVALUATION, TRAINING, run_accuracy

STRAY = "(not in a <dataset>/<run> folder)"  # where collect keeps logs it cannot place

# Table 3 row order and names; keys are the dataset directory names (CoOp's dataset config names)
TABLE3_DATASETS = {
    "imagenet": "ImageNet", "caltech101": "Caltech101", "oxford_pets": "OxfordPets", "stanford_cars": "StanfordCars",
    "oxford_flowers": "Flowers102", "food101": "Food101", "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397",
    "dtd": "DTD", "eurosat": "EuroSAT", "ucf101": "UCF101",
}
def _read(run_dir, kind):
    try:
        return run_accuracy(run_dir, kind)
    except UnusableRun as reason:
        return reason


def collect(out_root, train_dir="train_base", test_dir="test_new"):
    """{dataset: {run: (base, new)}} over the training runs under out_root/train_dir; ``run`` is the run's
    path below its dataset folder (``seed1``, or CoOp's ``shots_16/<trainer>/<cfg>/seed1``). Base and New
    are accuracies, None while a run is unfinished, or the UnusableRun that says why it cannot be used. A
    log.txt that is not in a run folder is kept under STRAY, to be listed."""
    runs = {}
    train_root = Path(out_root) / train_dir
    for log in sorted(train_root.rglob("log.txt")):
        parts = log.parent.relative_to(train_root).parts
        if len(parts) < 2:
            runs.setdefault(STRAY, {})[str(log)] = (UnusableRun(f"{log} is not in a <dataset>/<run> folder"), None)
            continue
        dataset, *run = parts
        base = _read(log.parent, TRAINING)
        new = _read(Path(out_root) / test_dir / dataset / Path(*run), EVALUATION)
        runs.setdefault(dataset, {})["/".join(run)] = (base, new)
    return runs


def base_new_h(bases, news, expected):
    """Cells Base, New, H from {seed: base} and {seed: new} of the same seeds."""
    hs = [harmonic_mean(bases[seed], news[seed]) for seed in bases]
    h = harmonic_mean(fmean(bases.values()), fmean(news.values())) if bases else None
    return {"Base": Cell.over(bases.values(), expected), "New": Cell.over(news.values(), expected),
            "H": Cell.over(hs, expected, mean=h)}


def summarize(runs, paper=False, train_dir="train_base", test_dir="test_new"):
    """The Report: Table 3's rows in its order (the Average first), and the missing seeds."""
    seeds = sorted(set().union(*(dataset_runs for dataset, dataset_runs in runs.items() if dataset != STRAY)))
    datasets = [d for d in TABLE3_DATASETS if d in runs] + sorted(set(runs) - set(TABLE3_DATASETS) - {STRAY})
    table = Table("Table 3 layout: base-to-new generalization (Base: base classes, after training on them; "
                  "New: the new classes)", ["Base", "New", "H"],
                  notes=["H: harmonic mean of the Base and New means, ± the standard deviation of the per-seed H"])
    missing, bases, news = [f"left out: {base}" for base, _ in runs.get(STRAY, {}).values()], {}, {}
    for dataset in datasets:
        for seed in seeds:
            base, new = runs[dataset].get(seed, (None, None))
            unusable = [value for value in (base, new) if isinstance(value, UnusableRun)]
            if unusable:
                missing.append(f"{dataset} {seed}: left out: {unusable[0]}")
            elif base is not None and new is not None:
                bases.setdefault(dataset, {})[seed], news.setdefault(dataset, {})[seed] = base, new
            elif seed not in runs[dataset]:
                missing.append(f"{dataset} {seed}: no training run in {train_dir}")
            else:
                missing.append(f"{dataset} {seed}: " + ("training unfinished" if base is None else
                                                        f"new-class evaluation missing or unfinished in {test_dir}"))
        name = TABLE3_DATASETS.get(dataset, dataset)
        table.rows.append(Row(name, base_new_h(bases.get(dataset, {}), news.get(dataset, {}), len(seeds))))
        if paper and name == "ImageNet":
            table.rows += published_rows(3, prefix="ImageNet: ", dataset="ImageNet")
    if bases:  # the datasets with a finished seed, averaged within each seed that finished on all of them
        average_bases = complete_means(list(bases.values()))
        average_news = complete_means(list(news.values()))
        average = [Row(f"Average over {len(bases)} datasets", base_new_h(average_bases, average_news, len(seeds)))]
        table.notes.append("Average: Base and New averaged over the datasets within each seed (the seeds finished "
                           "on all of them), H of those averages")
        if paper:
            average += published_rows(3, prefix="Average: ", dataset="Average")
            if sorted(bases) != sorted(TABLE3_DATASETS):
                table.notes.append("the published averages are over the 11 datasets of Table 3")
        table.rows[:0] = average
    return Report([table], missing, digits=2)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m dassl_trainers.base2new_summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_root", help="the OUTROOT given to configs/dassl/base2new.sh")
    parser.add_argument("--train-dir", default="train_base", help="sub-folder of the base training runs")
    parser.add_argument("--test-dir", default="test_new", help="sub-folder of the new-class evaluations")
    add_output_arguments(parser, "OUT_ROOT/base2new_summary")
    parser.add_argument("--runs", action="store_true", help="also list every run with its Base and New")
    args = parser.parse_args(argv)
    runs = collect(args.out_root, args.train_dir, args.test_dir)
    if not runs:
        parser.exit(2, f"{parser.prog}: error: no training logs under {Path(args.out_root) / args.train_dir}: "
                       "give the OUTROOT of configs/dassl/base2new.sh\n")
    if args.runs:
        for dataset, dataset_runs in runs.items():
            for run, (base, new) in dataset_runs.items():
                print(f"{dataset}/{run}: base {base}, new {new}")
    return print_and_write(summarize(runs, args.paper, args.train_dir, args.test_dir), args.out, args.out_root,
                           "base2new_summary", args.overwrite)


if __name__ == "__main__":
    sys.exit(main())

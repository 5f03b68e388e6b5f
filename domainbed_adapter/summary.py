"""Results of a DomainBed sweep in the paper's layout.

``python -m domainbed_adapter.summary --input_dir SWEEP [--selection training_domain|oracle|leave_one_out|final]
[--split out|in|all] [--paper] [--out PREFIX_OR_FOLDER]``

Reads a sweep's run folders (results.jsonl, and ``done`` once a run has finished) and prints, per dataset,
the test accuracy per test domain and their average, then the datasets' averages side by side (Table 1's
layout): mean ± standard deviation over trials. The checkpoint row of each run is chosen by DomainBed's
own model selection (``domainbed.model_selection``; training-domain validation by default) or, with
``--selection final``, the authors' protocol (``final_model_table``: the final model on the test domain's
``--split``). In-the-wild runs (``open_class_ratio`` > 0) form Table 4's base / new / total accuracy per
test domain instead, read from ``evaluate_open``'s results of the final model, on the whole test domain
by default (``--split all``, as the authors score it). ``--paper`` adds the published rows. Markdown and
CSV are written next to the terminal table (default: SWEEP/summary_<selection>).

Each run is read through ``sweep_runs``' checked readers; a run that cannot be used is listed with the
reason and left out of every mean, and cells whose runs come from different experiments are noted. Exit
code 0: every expected run was used; 1: the tables are written and runs are listed as missing, unfinished
or left out; 2: bad input.
"""
import argparse
import math
import os
import sys

from clipood_plugin.results_table import (Cell, Report, ResultsError, Row, Table, UnusableRun, add_output_arguments,
                                          complete_means, paper_rows, print_and_write, published_rows)

from .hparams import ALGORITHM_NAMES
from .sweep_runs import FINAL_SPLITS, OPEN_SPLITS, final_model_selection, load_runs, read_open_class_results

SELECTIONS = {"training_domain": "IIDAccuracySelectionMethod", "oracle": "OracleSelectionMethod",
              "leave_one_out": "LeaveOneOutSelectionMethod", "final": None}
OPEN_COLUMNS = ("Base", "New", "Total")
SPLITS = tuple(dict.fromkeys(OPEN_SPLITS + FINAL_SPLITS))
DEFAULT_SPLIT = {"final": "out", "in_the_wild": "all"}  # the authors': out with DomainBed's protocol, whole domain
# args that differ between the runs of one cell by design (DomainBed's sweep derives them per run)
PER_RUN_ARGS = ("output_dir", "seed", "hparams_seed", "hparams")


def environment_names(dataset, runs):
    """The dataset's environment names (DomainBed's datasets), else env<i> for the test envs seen."""
    try:
        from domainbed import datasets
        return list(datasets.get_dataset_class(dataset).ENVIRONMENTS)
    except (ImportError, NotImplementedError):
        seen = [env for run in runs if run.args["dataset"] == dataset for env in run.args["test_envs"]]
        return [f"env{i}" for i in range(max(seen) + 1)]


def ordered(names, first):
    return [name for name in first if name in names] + sorted(set(names) - set(first))


def missing_reason(runs, selection_name, dataset, algorithm, env, trial):
    found = [run for run in runs if run.cell() == (dataset, algorithm, env, trial)]
    if not found:
        return "no usable run"
    unfinished = [run.folder for run in found if not run.done]
    if unfinished:
        return "unfinished (no done file): " + ", ".join(unfinished)
    return f"no finite value under {selection_name}: " + ", ".join(run.folder for run in found)


def selected_accuracies(runs, selection):
    """{(dataset, algorithm): {test_env: {trial: accuracy in %}}} of the finished runs, one finite value per
    (trial, dataset, algorithm, test env) chosen by a DomainBed selection method."""
    from domainbed.lib import reporting
    from domainbed.lib.query import Q
    records = Q([record for run in runs if run.done for record in run.records])
    accuracies = {}
    for group in reporting.get_grouped_records(records):
        accuracy = selection.sweep_acc(group["records"])
        if accuracy is not None and math.isfinite(accuracy):
            cell = accuracies.setdefault((group["dataset"], group["algorithm"]), {}).setdefault(group["test_env"], {})
            cell[group["trial_seed"]] = 100 * accuracy
    return accuracies


def mixed_settings(runs):
    """One line per cell whose runs are not one experiment's, naming what differs. DomainBed's sweep runs
    one run per hparams seed in a cell, with hparams drawn from that seed, and its selection picks among
    them; runs whose train.py arguments differ (steps, holdout, data), or two runs of one hparams seed,
    come from other experiments that share the folder."""
    cells = {}
    for run in runs:
        cells.setdefault(run.cell(), []).append(run)
    lines = []
    for (dataset, algorithm, env, trial), found in sorted(cells.items()):
        settings = [{**{f"args.{k}": v for k, v in run.args.items() if k not in PER_RUN_ARGS},
                     **run.hparams, "hparams_seed": run.args["hparams_seed"]} for run in found]
        differing = [key for key in sorted(set().union(*settings)) if len({repr(s.get(key)) for s in settings}) > 1]
        one_seed_twice = len({run.args["hparams_seed"] for run in found}) < len(found)
        if one_seed_twice or any(key.startswith("args.") for key in differing):
            values = "; ".join(f"{key} ({', '.join(sorted({repr(s.get(key)) for s in settings}))})"
                               for key in differing)
            folders = ", ".join(os.path.basename(run.folder) for run in found)
            lines.append(f"mixed settings in {dataset} {algorithm} test env {env} trial {trial}: {len(found)} runs "
                         f"({folders}) differ in {values or 'nothing'}")
    return lines


def domain_shift_tables(runs, selection, paper):
    """Per dataset: accuracy per test domain and Avg; then Table 1's layout (datasets' Avg). And the missing cells."""
    trials = sorted({run.args["trial_seed"] for run in runs})
    accuracies = selected_accuracies(runs, selection)
    datasets = ordered({run.args["dataset"] for run in runs}, list(paper_rows(1)[0]["cells"]))
    tables, missing, dataset_averages = [], [], {}
    for dataset in datasets:
        envs = environment_names(dataset, runs)
        algorithms = ordered({run.args["algorithm"] for run in runs if run.args["dataset"] == dataset}, ALGORITHM_NAMES)
        table = Table(f"{dataset}: test accuracy per test domain, model selection: {selection.name}",
                      envs + ["Avg"], notes=["Avg: mean over the test domains within each trial"])
        for algorithm in algorithms:
            per_env = [accuracies.get((dataset, algorithm), {}).get(env, {}) for env in range(len(envs))]
            for env, by_trial in enumerate(per_env):
                missing += [f"{dataset} {algorithm} test env {env} ({envs[env]}) trial {trial}: "
                            + missing_reason(runs, selection.name, dataset, algorithm, env, trial)
                            for trial in trials if trial not in by_trial]
            dataset_averages[(dataset, algorithm)] = complete_means(per_env)
            cells = {name: Cell.over(by_trial.values(), len(trials)) for name, by_trial in zip(envs, per_env)}
            cells["Avg"] = Cell.over(dataset_averages[(dataset, algorithm)].values(), len(trials))
            table.rows.append(Row(algorithm, cells))
        if paper:
            table.rows += published_rows(1, rename={dataset: "Avg"})
        table.notes += mixed_settings([run for run in runs if run.args["dataset"] == dataset])
        tables.append(table)

    table1 = Table(f"Table 1 layout: average over the test domains of each dataset, model selection: {selection.name}",
                   datasets + ["Avg"], notes=["Avg: mean over the datasets within each trial"])
    for algorithm in ordered({run.args["algorithm"] for run in runs}, ALGORITHM_NAMES):
        per_dataset = [dataset_averages.get((dataset, algorithm), {}) for dataset in datasets]
        cells = {dataset: Cell.over(by_trial.values(), len(trials)) for dataset, by_trial in zip(datasets, per_dataset)}
        cells["Avg"] = Cell.over(complete_means(per_dataset).values(), len(trials))
        table1.rows.append(Row(algorithm, cells))
    if paper:
        paper_datasets = [column for column in paper_rows(1)[0]["cells"] if column != "Avg"]
        columns = datasets + (["Avg"] if sorted(paper_datasets) == sorted(datasets) else [])
        table1.rows += published_rows(1, rename={column: column for column in columns})
        if "Avg" not in columns:
            table1.notes.append(f"the published Avg is over {', '.join(paper_datasets)}: not shown beside this sweep's")
    return tables + [table1], missing


def in_the_wild_tables(runs, split, paper):
    """Table 4's layout per dataset: Base, New and Total per test domain of the final model on ``split``."""
    trials = sorted({run.args["trial_seed"] for run in runs})
    accuracies, missing, seen = {}, [], {}
    for run in runs:
        key = run.cell()
        if key in seen:
            raise ResultsError(f"two in-the-wild runs for {' '.join(map(str, key[:3]))} trial {key[3]}: {seen[key]} "
                               f"and {run.folder}; Table 4 takes one run per trial: summarize one hparams seed")
        seen[key] = run.folder
        try:
            values = read_open_class_results(run, split) if run.done else None
        except UnusableRun as reason:
            missing.append(f"{key[0]} {key[1]} test env {key[2]} trial {key[3]} (in the wild): left out: {reason}")
            continue
        if values is None:
            reason = (f"not evaluated: run python -m domainbed_adapter.evaluate_open --input_dir "
                      f"{os.path.dirname(run.folder)}" if run.done else f"unfinished (no done file): {run.folder}")
            missing.append(f"{key[0]} {key[1]} test env {key[2]} trial {key[3]} (in the wild): {reason}")
            continue
        for name, value in values.items():
            accuracies.setdefault((*key[:3], name), {})[key[3]] = value

    tables = []
    for dataset in ordered({run.args["dataset"] for run in runs}, []):
        envs = environment_names(dataset, runs)
        algorithms = ordered({run.args["algorithm"] for run in runs if run.args["dataset"] == dataset}, ALGORITHM_NAMES)
        missing += [f"{dataset} {algorithm} test env {env} ({envs[env]}) trial {trial} (in the wild): no run"
                    for algorithm in algorithms for env in range(len(envs)) for trial in trials
                    if (dataset, algorithm, env, trial) not in seen]
        split_name = "the whole test domain (split all)" if split == "all" else f"test domain {split} split"
        table = Table(f"Table 4 layout, {dataset}: base / new / total accuracy per test domain, final model, "
                      f"{split_name}", envs,
                      notes=["Base, New: accuracy on the base- and new-class images, predicting over all classes; "
                             "Total: over all images"])
        paper_domains = list(paper_rows(4, dataset=dataset)[0]["cells"]) if paper_rows(4, dataset=dataset) else []
        for name in OPEN_COLUMNS:
            for algorithm in algorithms:
                cells = {env_name: Cell.over(accuracies.get((dataset, algorithm, env, name), {}).values(), len(trials))
                         for env, env_name in enumerate(envs)}
                table.rows.append(Row(f"{name}: {algorithm}", cells))
            if paper and len(paper_domains) == len(envs):
                table.rows += published_rows(4, prefix=f"{name}: ", rename=dict(zip(paper_domains, envs)),
                                             split=name, dataset=dataset)
        tables.append(table)
    return tables, missing


def selection_method(selection, split):
    if selection == "final":
        return final_model_selection(split)
    from domainbed import model_selection
    return getattr(model_selection, SELECTIONS[selection])


def summarize(input_dir, selection="training_domain", split=None, paper=False):
    """The sweep's Report: domain-shift tables under ``selection``, in-the-wild tables, missing runs and the
    runs left out. ``split`` None: each protocol's default (DEFAULT_SPLIT)."""
    runs, unusable = load_runs(input_dir)
    domain_shift = [run for run in runs if not run.in_the_wild]
    in_the_wild = [run for run in runs if run.in_the_wild]
    tables, missing = [], list(unusable)
    if domain_shift:
        method = selection_method(selection, split or DEFAULT_SPLIT["final"])
        more_tables, more_missing = domain_shift_tables(domain_shift, method, paper)
        tables += more_tables
        missing += more_missing
    if in_the_wild:
        more_tables, more_missing = in_the_wild_tables(in_the_wild, split or DEFAULT_SPLIT["in_the_wild"], paper)
        tables += more_tables
        missing += more_missing
    return Report(tables, missing, digits=1)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m domainbed_adapter.summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input_dir", required=True, help="the --output_dir of a DomainBed sweep")
    parser.add_argument("--selection", choices=SELECTIONS, default="training_domain",
                        help="DomainBed's model selection (default: training-domain validation), or final: the "
                             "final model (the authors' protocol)")
    parser.add_argument("--split", choices=SPLITS,
                        help="the test domain's split the final model is scored on: with --selection final out "
                             "(the 20%% holdout, the default) or in (DomainBed's 80%%); in the wild also all, the "
                             "whole test domain (the default there, as the authors score it)")
    add_output_arguments(parser, "INPUT_DIR/summary_<selection>")
    args = parser.parse_args(argv)
    try:
        report = summarize(args.input_dir, args.selection, args.split, args.paper)
    except ResultsError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    name = f"summary_{args.selection}" + (f"_{args.split or DEFAULT_SPLIT['final']}"
                                          if args.selection == "final" else "")
    return print_and_write(report, args.out, args.input_dir, name, args.overwrite)


if __name__ == "__main__":
    sys.exit(main())

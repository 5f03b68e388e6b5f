"""The files of a DomainBed sweep, each read through one checked reader: a run folder (results.jsonl as
train.py writes it, ``done`` once it finished) and evaluate_open's ``open_class_results.json``. A reader
raises UnusableRun with the reason when a file is not what these programs write (unreadable, truncated,
lines that are not train.py's records, impossible accuracies, a finished run without its last step), so
that the summaries list the run and leave it out of every mean. Also the authors' protocol as a DomainBed
model-selection method (the final model: the row at the run's last step)."""
import json
import math
import os
import re
from dataclasses import dataclass

from clipood_plugin.results_table import ResultsError, UnusableRun, checked_accuracy

RESULTS = "results.jsonl"
DONE = "done"
OPEN_CLASS_RESULTS = "open_class_results.json"  # evaluate_open writes it beside model.pkl, for every split
FINAL_SPLITS = ("out", "in")  # of results.jsonl: the test domain's holdout (20%) and DomainBed's test split (80%)
OPEN_SPLITS = ("all", "in", "out")  # of open_class_results.json: "all" is the whole domain, the authors' test set
ACCURACY_KEY = re.compile(r"env\d+_(in|out|uda)_acc")
RUN_ARGS = {"dataset": str, "algorithm": str, "test_envs": list, "trial_seed": int, "hparams_seed": int}


@dataclass
class Run:
    folder: str
    records: list  # results.jsonl rows, each a checked record of train.py
    done: bool

    @property
    def args(self):
        return self.records[0]["args"]

    @property
    def hparams(self):
        return self.records[-1]["hparams"]

    @property
    def in_the_wild(self):
        return bool(self.hparams.get("open_class_ratio"))

    @property
    def final_record(self):
        """The row of the run's last step; None while the run has not reached it."""
        return final_record(self.records)

    def cell(self):
        args = self.args
        return args["dataset"], args["algorithm"], args["test_envs"][0], args["trial_seed"]


def last_step(args):
    """The step train.py records last: its ``--steps`` (else the dataset's N_STEPS) less one."""
    steps = args.get("steps")
    if steps is None:
        from domainbed import datasets
        steps = datasets.get_dataset_class(args["dataset"]).N_STEPS
    return steps - 1


def final_record(records):
    """The row of one run's last step, None if it has none (unfinished, or rows lost)."""
    last = last_step(records[0]["args"])
    return next((record for record in records if record["step"] == last), None)


def _record(line_number, line):
    try:
        record = json.loads(line)
    except ValueError as error:
        raise UnusableRun(f"line {line_number} is not JSON ({error})") from None
    if not isinstance(record, dict):
        raise UnusableRun(f"line {line_number} is {type(record).__name__} {line.strip()[:40]}, not a record of "
                          "DomainBed's train.py")
    for key, kind in (("args", dict), ("hparams", dict), ("step", int)):
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise UnusableRun(f"line {line_number} has no {key} as train.py writes it")
    for key, kind in RUN_ARGS.items():
        if not isinstance(record["args"].get(key), kind):
            raise UnusableRun(f"line {line_number} has no args.{key} as train.py writes it")
    for key, value in record.items():
        if ACCURACY_KEY.fullmatch(key):
            checked_accuracy(value, f"line {line_number}: {key}", scale=1)
    return record


def read_run(folder):
    """The Run of a run folder; UnusableRun naming why it cannot be used."""
    path = os.path.join(folder, RESULTS)
    if not os.path.lexists(path):
        raise UnusableRun(f"no {RESULTS} (not started, or not a run folder)")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [(number, line) for number, line in enumerate(f, 1) if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise UnusableRun(f"{RESULTS} unreadable ({getattr(error, 'strerror', None) or error})") from None
    if not lines:
        raise UnusableRun(f"{RESULTS} is empty")
    try:
        records = [_record(number, line) for number, line in lines]
    except UnusableRun as error:
        raise UnusableRun(f"{RESULTS} {error}") from None
    if any(record["args"] != records[0]["args"] for record in records):
        raise UnusableRun(f"{RESULTS} holds rows of several runs (their args differ)")
    if len(records[0]["args"]["test_envs"]) != 1:
        raise UnusableRun(f"{len(records[0]['args']['test_envs'])} test environments: the tables take runs with "
                          "one (--single_test_envs)")
    run = Run(folder, records, os.path.exists(os.path.join(folder, DONE)))
    try:
        final = run.final_record
    except (ImportError, NotImplementedError):  # no --steps recorded, and its dataset's N_STEPS unknown here
        raise UnusableRun(f"its last step is unknown: no --steps recorded and DomainBed's dataset "
                          f"{run.args['dataset']} cannot be looked up") from None
    if run.done and final is None:
        raise UnusableRun(f"finished (done file) but its {RESULTS} has no row at its last step {last_step(run.args)} "
                          f"(it ends at step {records[-1]['step']}): rows were lost; run it again")
    return run


def load_runs(input_dir):
    """(runs, lines naming each folder that could not be used and why)."""
    if not os.path.isdir(input_dir):
        raise ResultsError(f"{input_dir} is not a folder: give the --output_dir of a DomainBed sweep")
    runs, unusable = [], []
    for name in sorted(os.listdir(input_dir)):
        folder = os.path.join(input_dir, name)
        if not os.path.isdir(folder):
            continue
        try:
            runs.append(read_run(folder))
        except UnusableRun as reason:
            unusable.append(f"{folder}: {reason}")
    if not runs:
        found = f" ({len(unusable)} folders, none usable; the first: {unusable[0]})" if unusable else ""
        raise ResultsError(f"no run with results under {input_dir}{found}: give the --output_dir of a DomainBed "
                           "sweep whose runs have started")
    return runs, unusable


def read_open_class_results(run, split):
    """{'Base', 'New', 'Total'} accuracy in % of the run's test domain from evaluate_open's file; None when
    the run has not been evaluated; UnusableRun when the file cannot be used. Total is over all images of
    the split: (base * base_count + new * new_count) / (base_count + new_count), the correct predictions
    over the images. The whole domain ("all") must be the in and out splits together, image for image."""
    path = os.path.join(run.folder, OPEN_CLASS_RESULTS)
    if not os.path.lexists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except (OSError, ValueError) as error:
        raise UnusableRun(f"{path} unreadable ({getattr(error, 'strerror', None) or error}); run evaluate_open "
                          "again") from None
    if not isinstance(results, dict):
        raise UnusableRun(f"{path} is not what evaluate_open writes")
    env = run.args["test_envs"][0]
    correct = {}
    for each in OPEN_SPLITS:
        prefix = f"env{env}_{each}"
        keys = [f"{prefix}_{kind}" for kind in ("base_acc", "new_acc", "base_count", "new_count")]
        if each != split and not all(key in results for key in keys):
            continue  # only the split asked for must be there (files of older versions lack "all")
        missing = [key for key in keys if key not in results]
        if missing:
            raise UnusableRun(f"{path} has no {missing[0]}" + ("; run evaluate_open again, it now records the "
                                                               "whole domain" if each == "all" else ""))
        counts = [results[key] for key in keys[2:]]
        if not all(isinstance(count, int) and not isinstance(count, bool) and count >= 0 for count in counts):
            raise UnusableRun(f"{path}: {keys[2]} and {keys[3]} are {counts}, not image counts")
        accuracies = [checked_accuracy(results[key], f"{path}: {key}", scale=1) for key in keys[:2]]
        correct[each] = ([round(a * n) for a, n in zip(accuracies, counts)], counts, accuracies)
    if {"in", "out", "all"} <= set(correct):
        whole = [sum(pair) for pair in zip(correct["in"][0], correct["out"][0])], \
                [sum(pair) for pair in zip(correct["in"][1], correct["out"][1])]
        if whole != tuple(correct["all"][:2]):
            raise UnusableRun(f"{path}: the whole domain (correct, images) {tuple(correct['all'][:2])} is not its "
                              f"in and out splits together {whole}")
    (_, (base_count, new_count), (base, new)) = correct[split]
    images = base_count + new_count
    total = (base * base_count + new * new_count) / images if images else math.nan
    return {"Base": 100 * base, "New": 100 * new, "Total": 100 * total}


def final_model_selection(split):
    """A ``domainbed.model_selection.SelectionMethod`` that takes the row at each run's last step and scores
    ``env{test_env}_{split}_acc``; among several hparams seeds it keeps the one whose final row has the best
    training-domain validation accuracy (DomainBed's own criterion). A run without that row has no value."""
    if split not in FINAL_SPLITS:
        raise ResultsError(f"--selection final scores the test domain's split out or in (results.jsonl records "
                           f"no other), not {split!r}")
    from domainbed import model_selection

    class FinalModelSelectionMethod(model_selection.SelectionMethod):
        name = f"final model (end of training), test domain {split} split"

        @classmethod
        def run_acc(cls, run_records):
            test_records = model_selection.get_test_records(run_records)
            final = final_record(test_records) if len(test_records) else None
            if final is None:
                return None
            return {"val_acc": model_selection.IIDAccuracySelectionMethod._step_acc(final)["val_acc"],
                    "test_acc": final[f"env{final['args']['test_envs'][0]}_{split}_acc"]}

    return FinalModelSelectionMethod

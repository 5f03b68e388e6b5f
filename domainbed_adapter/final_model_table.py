"""Test accuracy of the final model of each run: the authors' protocol (they report the final BMA model).

``python -m domainbed_adapter.final_model_table --input_dir SWEEP_DIR``

DomainBed's collect_results picks one checkpoint row per run by a validation criterion; this table
takes the last row (the end of training, where CLIPood's BMA is complete) and reports DomainBed's test
split of each test environment (``env{i}_in_acc``), mean +/- standard error over trials.
"""
import argparse
import collections
import glob
import json
import os

import numpy as np


def final_rows(input_dir):
    """The last results.jsonl row of every finished run under ``input_dir``."""
    rows = []
    for path in sorted(glob.glob(os.path.join(input_dir, "*", "results.jsonl"))):
        if not os.path.exists(os.path.join(os.path.dirname(path), "done")):
            continue
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        if records:
            rows.append(max(records, key=lambda record: record["step"]))
    return rows


def final_model_accuracies(rows):
    """{(dataset, algorithm): {test_env: [accuracy per trial]}}."""
    table = collections.defaultdict(lambda: collections.defaultdict(list))
    for row in rows:
        args = row["args"]
        for env in args["test_envs"]:
            table[(args["dataset"], args["algorithm"])][env].append(row[f"env{env}_in_acc"])
    return table


def format_table(table):
    lines = []
    for dataset in sorted({dataset for dataset, _ in table}):
        algorithms = sorted(algorithm for d, algorithm in table if d == dataset)
        envs = sorted({env for algorithm in algorithms for env in table[(dataset, algorithm)]})
        lines.append(f"-------- Dataset: {dataset}, final model (end of training), test env in-split accuracy")
        lines.append(f"{'Algorithm':14}" + "".join(f"{'env ' + str(env):>16}" for env in envs) + f"{'Avg':>8}")
        for algorithm in algorithms:
            cells, means = [], []
            for env in envs:
                accs = 100 * np.array(table[(dataset, algorithm)].get(env, []))
                if len(accs):
                    means.append(accs.mean())
                    cells.append(f"{accs.mean():.1f} +/- {accs.std() / np.sqrt(len(accs)):.1f}")
                else:
                    cells.append("X")
            average = f"{np.mean(means):.1f}" if len(means) == len(envs) else "X"
            lines.append(f"{algorithm:14}" + "".join(f"{cell:>16}" for cell in cells) + f"{average:>8}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input_dir", required=True)
    args = parser.parse_args(argv)
    print(format_table(final_model_accuracies(final_rows(args.input_dir))))


if __name__ == "__main__":
    main()

"""``python -m dassl_trainers.base2new_summary OUTROOT``: Base, New and H per dataset and on average,
in the layout of Table 3 of the paper, from the logs of a base-to-new run.

Layout read (configs/dassl/base2new.sh writes it; CoOp's scripts write a deeper one, also read):
OUTROOT/train_base/<dataset>/.../seed<k>/log.txt*   base training; Base = its final test accuracy
OUTROOT/test_new/<dataset>/.../seed<k>/log.txt*     eval-only on the new classes; New = its accuracy
Per dataset, Base and New are means over seeds and H is their harmonic mean; the average row averages
Base and New over the datasets that have both and takes H of those averages (as CoCoOp and CLIPood do).
"""
import argparse
import os
import re
from pathlib import Path
from statistics import mean

from clipood_plugin.open_classes import harmonic_mean

# Table 3 row order and names; keys are the dataset directory names (CoOp's dataset config names)
TABLE3_DATASETS = {
    "imagenet": "ImageNet", "caltech101": "Caltech101", "oxford_pets": "OxfordPets", "stanford_cars": "StanfordCars",
    "oxford_flowers": "Flowers102", "food101": "Food101", "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397",
    "dtd": "DTD", "eurosat": "EuroSAT", "ucf101": "UCF101",
}
ACCURACY = re.compile(r"^\* accuracy: ([\d.]+)%")
END_OF_TRAINING = "Finish training"  # Dassl prints it before the final test


def final_accuracy(run_dir, after_line=None):
    """The last ``* accuracy: X%`` of the newest log in ``run_dir`` that has one (only lines after
    ``after_line`` count when given); None when there is none yet."""
    for log in sorted(Path(run_dir).glob("log.txt*"), reverse=True):  # log.txt-<timestamp> are the newer ones
        accuracy, counting = None, after_line is None
        for line in log.read_text(errors="replace").splitlines():
            counting = counting or line.strip() == after_line
            match = ACCURACY.match(line.strip())
            if counting and match:
                accuracy = float(match.group(1))
        if accuracy is not None:
            return accuracy
    return None


def collect(out_root, train_dir="train_base", test_dir="test_new"):
    """{dataset: [(run path, base, new), ...]} over the training runs found under out_root/train_dir."""
    runs = {}
    train_root = Path(out_root) / train_dir
    for log in sorted(train_root.rglob("log.txt")):
        relative = log.parent.relative_to(train_root)
        base = final_accuracy(log.parent, END_OF_TRAINING)
        new = final_accuracy(Path(out_root) / test_dir / relative)
        runs.setdefault(relative.parts[0], []).append((str(relative), base, new))
    return runs


def summarize(runs):
    """Rows (name, base, new, h, complete seeds, seeds) in Table 3 order, the average row first."""
    ordered = [d for d in TABLE3_DATASETS if d in runs] + sorted(d for d in runs if d not in TABLE3_DATASETS)
    rows = []
    for dataset in ordered:
        complete = [(base, new) for _, base, new in runs[dataset] if base is not None and new is not None]
        base = mean(b for b, _ in complete) if complete else None
        new = mean(n for _, n in complete) if complete else None
        h = harmonic_mean(base, new) if complete else None
        rows.append((TABLE3_DATASETS.get(dataset, dataset), base, new, h, len(complete), len(runs[dataset])))
    done = [row for row in rows if row[4]]
    if done:
        base, new = mean(row[1] for row in done), mean(row[2] for row in done)
        rows.insert(0, (f"Average ({len(done)} datasets)", base, new, harmonic_mean(base, new), None, None))
    return rows


def format_table(rows):
    def cell(value):
        return f"{value:6.2f}" if value is not None else "     -"

    lines = [f"{'Dataset':<24}{'Base':>7}{'New':>7}{'H':>7}  seeds"]
    for name, base, new, h, complete, total in rows:
        seeds = "" if total is None else f"{complete}/{total}"
        lines.append(f"{name:<24}{cell(base):>7}{cell(new):>7}{cell(h):>7}  {seeds}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_root", help="the OUTROOT given to configs/dassl/base2new.sh")
    parser.add_argument("--train-dir", default="train_base", help="sub-folder of the base training runs")
    parser.add_argument("--test-dir", default="test_new", help="sub-folder of the new-class evaluations")
    parser.add_argument("--runs", action="store_true", help="also list every run with its Base and New")
    args = parser.parse_args(argv)
    runs = collect(args.out_root, args.train_dir, args.test_dir)
    if not runs:
        raise SystemExit(f"no training logs under {os.path.join(args.out_root, args.train_dir)}")
    if args.runs:
        for dataset_runs in runs.values():
            for path, base, new in dataset_runs:
                print(f"{path}: base {base}, new {new}")
    print(format_table(summarize(runs)))


if __name__ == "__main__":
    main()

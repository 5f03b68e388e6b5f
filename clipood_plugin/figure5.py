"""The paper's analysis (Figure 5 (a)-(d)) on your data with `clipood train`, and each panel as a table.

    clipood figure5 run --output-dir OUT --data-dir ROOT --test-domains sketch [clipood train flags]
    clipood figure5 run ... --dry-run          # list the `clipood train` commands only
    clipood figure5 summary OUT [--markdown]

``run`` trains every distinct setting of the panels (figure5_panels.json, beside this file) once, in OUT/runs/<setting>/: a finished
run is skipped, an interrupted one resumed (with other flags than it was trained with, it stops: use another
OUT). Flags it does not know go to every `clipood train` (--data-dir, --test-domains, --model, --pretrained,
--steps, --lr, ...); a row's own settings win over them. OUT/figure5.json names each row's run. ``summary`` prints each panel: the test accuracy of the model
each run predicts with (the averaged weights; the last ones for averaging none) per test domain, their
mean, and the mean of the last weights; a WiSE-FT row (settings with wise_ft) those of the interpolation
whose alpha is best on the holdout, and its curve below the tables. A run whose results.json cannot be used (unreadable, truncated, an
accuracy that is null or outside [0, 100]) is shown as "left out" and listed with the reason; ``summary``
exits 1 when a row has no value (left out or not run), 0 when every row has one, 2 on bad input.
"""
import argparse
import json
import shlex
import sys
from pathlib import Path

from . import train_command
from .files import make_dirs, write_json
from .results_table import UnusableRun, format_table
from .run_report import read_results
from .settings import DataError, changed_settings
from .train_config import TrainConfig, flag
from .write_guard import check_writes

PANELS = Path(__file__).resolve().parent / "figure5_panels.json"  # the paper's panels, as data
MANIFEST = "figure5.json"


def flags_of(settings):
    """`clipood train` flags of a row's settings (TrainConfig field names)."""
    return [part for key, value in settings.items() for part in (flag(key), str(value))]


def plan(panels, train_flags):
    """({run name: `clipood train` arguments}, {panel: {"title", "rows": [{"label", "run"}]}}).

    A run is named by its values of the fields the panels vary that differ from `clipood train`'s defaults
    ("clipood": the method), after ``train_flags`` and the row's settings are parsed as `clipood train` does;
    fields that do not change the trained model (TrainConfig.RESUMABLE_CHANGES: wise_ft among them) name no run,
    so a WiSE-FT row is an evaluation of the run its other settings name, which is trained with its --wise-ft."""
    parser, defaults = train_command.parser(), vars(TrainConfig())
    set_by_rows = {key for panel in panels.values() for row in panel["rows"] for key in row["settings"]}
    varied = [field for field in defaults if field in set_by_rows and field not in TrainConfig.RESUMABLE_CHANGES]
    runs, manifest = {}, {}
    for key, panel in panels.items():
        rows = []
        for row in panel["rows"]:
            arguments = [*train_flags, *flags_of(row["settings"])]
            config = vars(parser.parse_args(arguments))
            name = "_".join(f"{field}-{config[field]}" for field in varied if config[field] != defaults[field])
            name = name or "clipood"
            if "wise_ft" in row["settings"]:
                rows.append({"label": row["label"], "run": name, "wise_ft": True})
                runs[name] = arguments  # the same run, evaluated with WiSE-FT at its end
            else:
                rows.append({"label": row["label"], "run": name})
                runs.setdefault(name, arguments)
        manifest[key] = {"title": panel["title"], "rows": rows}
    return runs, manifest


def run(runs, output_dir, dry_run=False, log=print):
    """Train the runs one after the other in this process; returns the first non-zero exit code, else 0."""
    parser = train_command.parser()
    for name, arguments in runs.items():
        run_dir = output_dir / "runs" / name
        arguments = [*arguments, "--output-dir", str(run_dir)]
        try:
            results = read_results(run_dir / "results.json")
        except UnusableRun as reason:
            log(f"figure5: error: {reason}: remove {run_dir} to train that run again, or use another --output-dir")
            return 2
        if results is not None:
            saved, config = results["config"], vars(parser.parse_args(arguments))
            changed = [key for key, _, _ in changed_settings(
                saved, config, [key for key in saved if key not in TrainConfig.RESUMABLE_CHANGES])]
            if changed:
                log(f"figure5: error: {run_dir} was trained with other {', '.join(changed)}; use another --output-dir")
                return 2
            log(f"done: {run_dir}")
            continue
        if (run_dir / "checkpoint.pt").exists():
            arguments.append("--resume")
        log("clipood train " + shlex.join(arguments))
        if not dry_run:
            code = train_command.main(parser.parse_args(arguments))
            if code:
                return code
    return 0


def read_manifest(output_dir):
    """OUT/figure5.json, checked: {panel: {"title", "rows": [{"label", "run"}]}}."""
    path = output_dir / MANIFEST
    try:
        panels = json.loads(path.read_text())
        if not all(isinstance(row["label"], str) and isinstance(row["run"], str) and isinstance(panel["title"], str)
                   for panel in panels.values() for row in panel["rows"]):
            raise TypeError
    except FileNotFoundError:
        raise DataError(f"no {path}: give the --output-dir of `clipood figure5 run`") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise DataError(f"{path} is not the manifest `clipood figure5 run` writes (unreadable or truncated): run "
                          "`clipood figure5 run` with the same flags again to rewrite it") from None
    return panels


def write_manifest(manifest, output_dir):
    """OUT/figure5.json, replacing only a manifest (the write guard: not a file figure5 did not write)."""
    path = output_dir / MANIFEST
    check_writes({path: "the manifest"}, "clipood figure5 run", "--output-dir", overwrite=None,
                 written_here=lambda _: _is_manifest(output_dir))
    make_dirs(output_dir)
    write_json(manifest, path)


def _is_manifest(output_dir):
    try:
        read_manifest(output_dir)
    except DataError:
        return False
    return True


def summarize(output_dir, markdown=False):
    """(every panel of OUT/figure5.json as a table of its runs' test accuracies (%), lines naming the runs
    left out and why, whether every row has its values)."""
    panels = read_manifest(output_dir)
    results, left_out = {}, []
    for name in sorted({row["run"] for panel in panels.values() for row in panel["rows"]}):
        try:
            results[name] = read_results(output_dir / "runs" / name / "results.json")
        except UnusableRun as reason:
            results[name] = reason
            left_out.append(f"{name}: {reason}")
    done = [result for result in results.values() if isinstance(result, dict)]
    domains = done[0]["test_domains"] if done else []  # the same in every run: the runner gives them all
    header = ["setting", *domains, "mean", "last weights, mean"]
    tables, curves, complete = [], [], True
    for panel in panels.values():
        rows = []
        for row in panel["rows"]:
            result = results[row["run"]]
            if isinstance(result, dict) and row.get("wise_ft") and "wise_ft" not in result:
                result = "left out"  # trained before its row asked for WiSE-FT
                left_out.append(f"{row['run']}: trained without --wise-ft; remove runs/{row['run']} and run "
                                "`clipood figure5 run` again")
            if not isinstance(result, dict):
                complete = False
                rows.append([row["label"], *["not run" if result is None else "left out"] * (len(header) - 1)])
            elif row.get("wise_ft"):
                best = result["wise_ft"]["best"]
                rows.append([f"{row['label']}, alpha {result['wise_ft']['best_alpha']:g} (best on the holdout)",
                             *(f"{best[d]:.1f}" for d in domains),
                             f"{sum(best.values()) / len(best):.1f}", f"{result['mean_final']:.1f}"])
                curves.append(f"WiSE-FT of run {row['run']} (%):\n" + format_table(
                    ["alpha", "holdout mean", "test mean"],
                    [[f"{alpha:g}", f"{holdout:.1f}", f"{test:.1f}"] for alpha, holdout, test in result["wise_ft"]["curve"]],
                    markdown))
            else:
                rows.append([row["label"], *(f"{result['bma'][d]:.1f}" for d in domains),
                             f"{result['mean_bma']:.1f}", f"{result['mean_final']:.1f}"])
        title = f"{panel['title']}: test accuracy (%)"
        tables.append(("### " if markdown else "") + title + "\n\n" + format_table(header, rows, markdown))
    tables += curves
    if left_out:
        tables.append("Left out (their results cannot be used):\n" + "\n".join(f"  {line}" for line in left_out))
    return "\n\n".join(tables), complete


def main(argv=None, prog="clipood figure5"):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", allow_abbrev=False,
                                     help="train every setting; other flags go to `clipood train`")
    run_parser.add_argument("--output-dir", required=True, type=Path, help="OUT: runs/ and figure5.json go here")
    run_parser.add_argument("--config", type=Path, default=PANELS, help="the panels (default: %(default)s)")
    run_parser.add_argument("--panels", nargs="+", help="keys of the panels to run (default: all)")
    run_parser.add_argument("--dry-run", action="store_true", help="list the `clipood train` commands only")
    summary_parser = commands.add_parser("summary", help="print each panel as a table")
    summary_parser.add_argument("output_dir", type=Path, help="the --output-dir of `run`")
    summary_parser.add_argument("--markdown", action="store_true", help="Markdown tables")
    args, train_flags = parser.parse_known_args(argv)
    if args.command == "summary":
        if train_flags:
            parser.error(f"unrecognized arguments: {' '.join(train_flags)}")
        try:
            text, complete = summarize(args.output_dir, args.markdown)
        except DataError as error:
            print(f"{prog}: error: {error}", file=sys.stderr)
            return 2
        print(text)
        return 0 if complete else 1
    panels = json.loads(args.config.read_text())["panels"]
    unknown = sorted(set(args.panels or ()) - set(panels))
    if unknown:
        parser.error(f"panels {unknown} are not in {args.config}: {sorted(panels)}")
    runs, manifest = plan(panels, train_flags)  # all panels: the summary shows those not run yet as such
    selected = {row["run"] for key in args.panels or panels for row in manifest[key]["rows"]}
    runs = {name: arguments for name, arguments in runs.items() if name in selected}
    if not args.dry_run:
        try:
            write_manifest(manifest, args.output_dir)
        except DataError as error:
            print(f"{prog}: error: {error}", file=sys.stderr)
            return 2
    print(f"{len(runs)} runs for panels {', '.join(args.panels or panels)} in {args.output_dir / 'runs'}")
    return run(runs, args.output_dir, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())

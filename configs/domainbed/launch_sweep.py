"""Launch the paper's DomainBed sweep (Table 1 in the paper's numerics by default) through DomainBed's own sweep,
then print the tables.

    python configs/domainbed/launch_sweep.py --data_dir D --output_dir O --command_launcher local

The default config, ``table1_domain_shift_paper_numerics.json``, is the one that reproduces the published
numbers (the authors' fp16 arithmetic); ``--config`` picks another (``table1_domain_shift.json`` for this
project's numerics, ``table4_in_the_wild*.json`` for Table 4). The script prints the config it runs first.
DomainBed's sweep asks "Are you sure? (y/n)" before it launches: without a terminal to answer, pass
``--skip_confirmation`` (the script refuses in one line otherwise).

Run it where ``import domainbed`` works (the root of a DomainBed checkout, or with it on PYTHONPATH) and
with the Python that has this project installed first on PATH: DomainBed's launchers start jobs as
``python -m domainbed.scripts.train``. For each dataset of the config and each algorithm it runs
``python -m domainbed.scripts.sweep launch`` with that dataset's paper settings (default hparams,
``--hparams`` with the paper values, ``--steps`` = epochs x 500, single test environments; CLIPZeroShot
gets --steps 1 as it does not train). Then it prints the results beside the paper's
(``domainbed_adapter.summary --paper``, also written as Markdown and CSV into the output dir): under
DomainBed's training-domain validation and under the authors' protocol (the final model on the test
domain's out split); for open-class configs it first scores base and new classes (``evaluate_open``)
and prints Table 4's layout over the whole test domain, as the authors score it (the summary's
``--split out`` or ``in`` give the splits). A step that fails is one line naming it, and the script exits
with its code: 1 from a summary means its tables are written but runs are missing or left out (listed).
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ZERO_SHOT = "CLIPZeroShot"
DEFAULT_CONFIG = "table1_domain_shift_paper_numerics.json"  # what reproduces the published numbers
RUN_SETTINGS = ("epochs", "steps")  # go to --steps; the hparam steps stays null (= what train.py runs)


def sweep_commands(config, args):
    """One ``domainbed.scripts.sweep launch`` command per (dataset, algorithm)."""
    from domainbed_adapter.hparams import default_clipood_hparams
    extra = json.loads(args.hparams) if args.hparams else {}
    commands = []
    for dataset in args.datasets or config["datasets"]:
        settings = config["datasets"][dataset]
        for algorithm in args.algorithms or config["algorithms"]:
            known = default_clipood_hparams(algorithm, dataset)  # pass only the hparams this algorithm has
            hparams = {key: value for key, value in settings.items() if key in known and key not in RUN_SETTINGS}
            hparams.update(extra)
            steps = 1 if algorithm == ZERO_SHOT else (args.steps or settings["steps"])
            commands.append([
                sys.executable, "-m", "domainbed.scripts.sweep", "launch", "--datasets", dataset,
                "--algorithms", algorithm, "--n_hparams_from", "0", "--n_hparams", "1",
                "--n_trials", str(args.n_trials or config["n_trials"]), "--single_test_envs",
                "--steps", str(steps), "--hparams", json.dumps(hparams, sort_keys=True),
                "--data_dir", args.data_dir, "--output_dir", args.output_dir,
                "--command_launcher", args.command_launcher,
            ] + (["--skip_confirmation"] if args.skip_confirmation else []))
    return commands


def report_commands(config, args):
    summary = [sys.executable, "-m", "domainbed_adapter.summary", "--input_dir", args.output_dir, "--paper"]
    if any(settings.get("open_class_ratio") for settings in config["datasets"].values()):
        return [[sys.executable, "-m", "domainbed_adapter.evaluate_open", "--input_dir", args.output_dir],
                summary + ["--selection", "final", "--split", "all"]]
    return [summary, summary + ["--selection", "final", "--split", "out"]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(HERE, DEFAULT_CONFIG),
                        help=f"the sweep's settings (default: {DEFAULT_CONFIG}, the paper's numerics, which "
                             "reproduce the published numbers; table1_domain_shift.json: this project's numerics; "
                             "table4_in_the_wild*.json: Table 4)")
    parser.add_argument("--data_dir", required=True, help="DomainBed's --data_dir (the datasets' parent folder)")
    parser.add_argument("--output_dir", required=True, help="the sweep's folder: one subfolder per run, the tables")
    parser.add_argument("--command_launcher", required=True, help="a name in domainbed.command_launchers.REGISTRY "
                                                                  "(local, multi_gpu, dummy, slurm, ...)")
    parser.add_argument("--datasets", nargs="+", help="subset of the config's datasets")
    parser.add_argument("--algorithms", nargs="+", help="subset of the config's algorithms")
    parser.add_argument("--n_trials", type=int, help="override the config's number of trials")
    parser.add_argument("--steps", type=int, help="override the paper's steps of every training run (smoke tests "
                                                  "only; CLIPZeroShot always runs 1)")
    parser.add_argument("--hparams", help="JSON merged over the paper settings, "
                                          'e.g. \'{"clip_pretrained": "/w/ViT-B-16.bin"}\'')
    parser.add_argument("--skip_confirmation", action="store_true",
                        help="launch without DomainBed's \"Are you sure? (y/n)\" (needed without a terminal)")
    parser.add_argument("--no_report", action="store_true", help="launch only (e.g. for a cluster launcher)")
    args = parser.parse_args(argv)
    if not args.skip_confirmation and not sys.stdin.isatty():
        parser.error("DomainBed's sweep asks \"Are you sure? (y/n)\" and there is no terminal to answer it: "
                     "pass --skip_confirmation")
    with open(args.config) as f:
        config = json.load(f)
    print(f"config: {args.config}", flush=True)
    unknown = set(args.datasets or ()) - set(config["datasets"])
    if unknown:
        parser.error(f"datasets {sorted(unknown)} are not in {args.config}: {sorted(config['datasets'])}")
    worst = 0
    for command in sweep_commands(config, args) + ([] if args.no_report else report_commands(config, args)):
        print("+", " ".join(command), flush=True)
        code = subprocess.run(command).returncode
        if code:
            print(f"launch_sweep.py: {' '.join(command[1:4])} exited with code {code} (its message is above)",
                  file=sys.stderr, flush=True)
            if code != 1 or "domainbed_adapter.summary" not in command:
                return code  # a failed step: what follows would read what it did not write
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(main())

"""`clipood train`, `clipood demo` and `clipood export`. The arguments are parsed and checked before torch and
open_clip are imported (on use, below), so that --help and a bad argument answer at once."""
import argparse
import dataclasses
import difflib
import sys
import typing

from . import __version__
from .packages import MissingPackageError
from .settings import (RANDOM_INIT_LR, TINY_MODEL, DataError, TrainConfig, alphas_of, check_settings, flag,
                       random_init_warning)

# The demo: generated shapes, test domain "painting". A random-init model learns from scratch, so it
# needs more steps and a far larger learning rate than the paper's fine-tuning.
DEMO_TEST_DOMAIN = "painting"
DEMO_REAL = dict(steps=300, batch_size=16, eval_every=50, checkpoint_every=100, eval_batch_size=256)
DEMO_TINY = dict(DEMO_REAL, model=TINY_MODEL, pretrained="none", lr=RANDOM_INIT_LR, steps=600, eval_every=100)
SUMMARY_ENTRY_POINTS = "clipood.summaries"


def _summaries():
    """{KIND: entry point} of `clipood summary KIND ARGS...`: the main(argv) that tables the runs of a front end.
    The adapters register theirs (setup.py's entry points): the core names none of them, and imports one only
    when it is asked for."""
    from importlib.metadata import entry_points

    points = entry_points()
    group = points.select(group=SUMMARY_ENTRY_POINTS) if hasattr(points, "select") else \
        points.get(SUMMARY_ENTRY_POINTS, [])  # Python 3.9
    return {point.name: point for point in group}


def _add_config_flags(parser, defaults, skip=()):
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        option = flag(f.name)
        default = getattr(defaults, f.name)
        help_text = f.metadata["help"] + ("" if default is None else f" (default: {default})")
        if hints[f.name] is bool:
            parser.add_argument(option, action="store_true", help=f.metadata["help"])
        elif hints[f.name] is list:
            parser.add_argument(option, nargs="+", default=default, help=help_text)
        else:
            kind = {"int": int, "float": float}.get(hints[f.name].__name__, str)
            parser.add_argument(option, type=kind, default=default, help=help_text, choices=f.metadata.get("choices"))


class _Parser(argparse.ArgumentParser):
    """An argument no option takes is an error of the (sub)command whose arguments it is among: its usage
    is shown, with the closest option names (argparse leaves it to the top-level parser, which shows its
    own usage and no suggestion)."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            options = [option for action in self._actions for option in action.option_strings]
            close = [match for extra in extras if extra.startswith("-")
                     for match in difflib.get_close_matches(extra.split("=", 1)[0], options, n=1)]
            self.error(f"unrecognized arguments: {' '.join(extras)}"
                       + (f" (did you mean {' or '.join(close)}?)" if close else ""))
        return namespace, extras


def build_parser():
    parser = _Parser(prog="clipood", description="CLIPood: fine-tune CLIP with Margin Metric "
                     "Softmax and Beta Moving Average (Shu et al., ICML 2023)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train_parser = commands.add_parser("train", help="train on ROOT/<domain>/<class>/<image>, test on held-out domains")
    _add_config_flags(train_parser, TrainConfig())
    for action in train_parser._actions:
        if action.dest in ("data_dir", "test_domains"):
            action.required = True
    demo = commands.add_parser("demo", help="generate a small shapes dataset and run CLIPood on it "
                               "(ViT-B-16 when a GPU and its weights are there, else clipood-tiny on the CPU)")
    _add_config_flags(demo, TrainConfig(**DEMO_TINY), skip=("data_dir", "test_domains"))
    for action in demo._actions:  # only flags the user gives override the preset the demo picks
        if action.dest != "help":
            action.default = argparse.SUPPRESS
    export = commands.add_parser("export", help="write a trained model (model.pt, DomainBed model.pkl, Dassl "
                                 "checkpoint) as an open_clip checkpoint: averaged image tower + pretrained text tower")
    export.add_argument("checkpoint", help="model.pt of `clipood train`, DomainBed model.pkl, or Dassl checkpoint")
    export.add_argument("out", help="the open_clip checkpoint to write (a JSON with its model name goes beside it)")
    export.add_argument("--pretrained", help="the weights the run started from, if not where it recorded them "
                        "(e.g. a local file of its tag)")
    export.add_argument("--overwrite", action="store_true", help="replace OUT or its JSON although no earlier "
                        "export wrote them (an input of the export is never replaced)")
    _add_evaluate_parser(commands)
    summary = commands.add_parser("summary", help="table the runs of a DomainBed sweep (domainbed), of CoOp's "
                                  "base-to-new (base2new) or ImageNet variants (imagenet) against the paper")
    summary.add_argument("kind", choices=sorted(_summaries()), help="whose runs; `clipood summary KIND --help` lists ARGS")
    summary.add_argument("args", nargs=argparse.REMAINDER, help="the summary's own arguments")
    figure5 = commands.add_parser("figure5", help="the paper's Figure 5 analysis on your data: `clipood figure5 "
                                  "run ...` trains its settings, `clipood figure5 summary OUT` tables them")
    figure5.add_argument("action", choices=("run", "summary"), help="`clipood figure5 ACTION --help` lists ARGS")
    figure5.add_argument("args", nargs=argparse.REMAINDER, help="the action's own arguments")
    return parser


def _add_evaluate_parser(commands):
    defaults = TrainConfig()
    evaluate = commands.add_parser("evaluate", help="accuracy of a saved model (model.pt, checkpoint.pt, DomainBed "
                                   "model.pkl, Dassl checkpoint, clipood export file) on ROOT/<domain>/<class>/<image>")
    evaluate.add_argument("model", help="the saved model (an export file needs its .json beside it)")
    evaluate.add_argument("--data-dir", required=True, help="ROOT of ROOT/<domain>/<class>/<image>")
    evaluate.add_argument("--domains", nargs="+", help="the domains to evaluate (default: all)")
    names = evaluate.add_mutually_exclusive_group()
    names.add_argument("--class-names", help="a,b,c: predict among these names (open classes; every folder class "
                       "must be one of them; default: the model's training classes)")
    names.add_argument("--class-names-file", help="the same, one name per line")
    evaluate.add_argument("--output", help="write the results to this JSON file")
    evaluate.add_argument("--device", help=TrainConfig.__dataclass_fields__["device"].metadata["help"])
    evaluate.add_argument("--batch-size", type=int, default=defaults.eval_batch_size,
                          help=f"images per batch (default: {defaults.eval_batch_size})")
    evaluate.add_argument("--workers", type=int, default=defaults.workers,
                          help=f"data loading processes (default: {defaults.workers})")
    evaluate.add_argument("--pretrained", help="the weights the run started from, if not where it recorded them "
                          "(its text tower encodes the class names; WiSE-FT's theta_0 is its image tower)")
    evaluate.add_argument("--wise-ft", metavar="ALPHAS", help="e.g. 0,0.25,0.5,0.75,1: also evaluate WiSE-FT "
                          "(Wortsman et al., CVPR 2022), the weights (1 - alpha) pretrained + alpha fine-tuned, for "
                          "each alpha in [0, 1]")


def _demo_config(chosen):
    """Real CLIP only where it runs fast and its weights are there; the tiny model otherwise."""
    import torch

    from . import distributed
    from .backbone import pretrained_weights_available, resolve_model_name

    if distributed.launched_world_size() > 1:  # every rank would write the same generated images at once
        raise DataError("clipood demo runs in one process: run it once without torchrun (it writes "
                        "OUTPUT_DIR/demo_data), then torchrun ... -m clipood_plugin train --data-dir "
                        f"OUTPUT_DIR/demo_data --test-domains {DEMO_TEST_DOMAIN} ...")
    if "model" in chosen:
        preset = DEMO_REAL
    else:
        use_real = torch.cuda.is_available() and pretrained_weights_available(resolve_model_name("ViT-B-16"), "openai")
        preset = DEMO_REAL if use_real else DEMO_TINY
        print(f"demo model: {'ViT-B-16 (openai weights) on the GPU' if use_real else TINY_MODEL + ' (random init)'}"
              + ("" if use_real else ": no GPU or no pretrained weights here; pass --model/--pretrained to choose"))
    return _demo_settings(preset, chosen)


def _demo_settings(preset, chosen):
    config = TrainConfig(**{**preset, **chosen, "test_domains": [DEMO_TEST_DOMAIN]})
    config.data_dir = f"{config.output_dir}/demo_data"
    return config


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except MissingPackageError as error:  # e.g. torch and torchvision that do not match, on any command
        return _fail(args.command, error)


def _run(args):
    if args.command == "export":
        from .export import main as export_main
        return export_main(args.checkpoint, args.out, args.pretrained, args.overwrite)
    if args.command == "summary":
        return _summaries()[args.kind].load()(args.args)
    if args.command == "figure5":
        from .figure5 import main as figure5_main
        return figure5_main([args.action, *args.args])
    if args.command == "evaluate":
        try:  # the gate's eval_batch_size, workers and WiSE-FT alphas, as evaluate spells them
            args.wise_ft = None if args.wise_ft is None else alphas_of(args.wise_ft, "--wise-ft")
            check_settings({"eval_batch_size": args.batch_size, "workers": args.workers,
                            **({} if args.wise_ft is None else {"wise_ft_alphas": args.wise_ft})},
                           spelled={"eval_batch_size": "--batch-size", "workers": "--workers",
                                    "wise_ft_alphas": "--wise-ft"}.get)
        except DataError as error:
            return _fail("evaluate", error)
        from .evaluate import main as evaluate_main
        return evaluate_main(args)
    return _train_or_demo(args)


def _train_or_demo(args):
    command = args.command
    chosen = {k: v for k, v in vars(args).items() if k != "command"}
    try:  # everything the command line alone can tell, before anything heavy is imported
        config = _demo_settings(DEMO_TINY, chosen) if command == "demo" else TrainConfig(**chosen)
        config.check()
    except DataError as error:
        return _fail(command, error)

    from .backbone import WeightsUnavailableError
    from .standalone import Interrupted, train
    from .synthetic import make_demo_dataset
    from .training_step import TrainingDivergedError

    try:
        if command == "demo":
            config = _demo_config(chosen)
        warning = random_init_warning(config.pretrained, config.lr, "--pretrained none", "--lr {}")
        if warning:
            print(f"clipood {command}: {warning}", file=sys.stderr)
        train(config, prepare_data=make_demo_dataset if command == "demo" else None)
    except WeightsUnavailableError as error:
        return _fail(command, error.worded_for("--pretrained {path}", f"--model {TINY_MODEL} --pretrained none",
                                               "--image-norm {norm}"))
    except (DataError, FileNotFoundError, ValueError, MissingPackageError, TrainingDivergedError) as error:
        return _fail(command, error)
    except Interrupted as stop:
        print(f"\nclipood {command}: stopped by {stop}; {stop.kept}", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:  # before the run began (its own handler takes over from there)
        print(f"\nclipood {command}: interrupted before the run began; nothing was saved", file=sys.stderr)
        return 130
    return 0


def _fail(command, error):
    print(f"clipood {command}: error: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

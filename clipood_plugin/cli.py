"""The `clipood` command: its parser, and the dispatch to each command's module.

    clipood train     train on ROOT/<domain>/<class>/<image>, test on held-out domains (train_command.py)
    clipood demo      generate a small shapes dataset and train on it (train_command.py)
    clipood export    a trained model as an open_clip checkpoint (export.py)
    clipood evaluate  the accuracy of a saved model, optionally of its WiSE-FT interpolations (evaluate.py)
    clipood summary   table the runs of a front end against the paper (the adapters' entry points)
    clipood figure5   the paper's Figure 5 analysis on your data (figure5.py)

The arguments are parsed and checked before torch and open_clip are imported (on use, in those modules), so
that --help and a bad argument answer at once."""
import argparse
import sys

from . import __version__, train_command
from .command_line import Parser, fail
from .packages import MissingPackageError
from .settings import DataError, check_settings
from .train_config import TrainConfig, alphas_of

SUMMARY_ENTRY_POINTS = "clipood.summaries"


def _summaries():
    """{KIND: entry point} of `clipood summary KIND ARGS...`: the main(argv) that tables the runs of a front end.
    The adapters register theirs (setup.py's entry points): the core names none of them, and imports one only
    when it is asked for."""
    from .registry import registered

    return registered(SUMMARY_ENTRY_POINTS)


def build_parser():
    parser = Parser(prog="clipood", description="CLIPood: fine-tune CLIP with Margin Metric "
                     "Softmax and Beta Moving Average (Shu et al., ICML 2023)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    train_command.add_commands(commands)
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
    evaluate.add_argument("--overwrite", action="store_true", help="replace an --output file that no `clipood "
                          "evaluate` wrote (never a file it reads, nor a file of a `clipood train` run)")
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


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except MissingPackageError as error:  # e.g. torch and torchvision that do not match, on any command
        return fail(args.command, error)


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
            return fail("evaluate", error)
        from .evaluate import main as evaluate_main
        return evaluate_main(args)
    return train_command.main(args)


if __name__ == "__main__":
    sys.exit(main())

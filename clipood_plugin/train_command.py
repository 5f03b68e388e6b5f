"""`clipood train` and `clipood demo`: their flags (TrainConfig's fields), checked before torch and open_clip
are imported (standalone.train imports them once the run's inputs are checked) so that --help, a bad argument
and a bad input answer at once, and the run."""
import argparse
import dataclasses
import sys
import typing

from .command_line import Parser, fail
from .errors import LearnedNothingError, TrainingDivergedError
from .packages import MissingPackageError
from .settings import RANDOM_INIT_LR, TINY_MODEL, DataError, random_init_warning
from .stop_signals import Interrupted
from .train_config import TrainConfig, flag

# The demo: generated shapes, test domain "painting". A random-init model learns from scratch, so it
# needs more steps and a far larger learning rate than the paper's fine-tuning.
DEMO_TEST_DOMAIN = "painting"
DEMO_REAL = dict(steps=300, batch_size=16, eval_every=50, checkpoint_every=100, eval_batch_size=256)
DEMO_TINY = dict(DEMO_REAL, model=TINY_MODEL, pretrained="none", lr=RANDOM_INIT_LR, steps=600, eval_every=100)


def add_commands(commands):
    """`clipood train` and `clipood demo`, as subcommands of ``commands`` (the `clipood` parser's)."""
    _add_train_arguments(commands.add_parser("train", help="train on ROOT/<domain>/<class>/<image>, test on "
                                             "held-out domains"))
    demo = commands.add_parser("demo", help="generate a small shapes dataset and run CLIPood on it "
                               "(ViT-B-16 when a GPU and its weights are there, else clipood-tiny on the CPU)",
                               description="Generates a small shapes dataset in OUTPUT_DIR/demo_data and trains on "
                               f"it, testing on {DEMO_TEST_DOMAIN}: ViT-B-16 from its openai weights where a GPU and "
                               "those weights are there, or whenever --model is given; else clipood-tiny from a "
                               "random init, on the CPU, with more steps and a larger --lr.")
    real, tiny = TrainConfig(**DEMO_REAL), TrainConfig(**DEMO_TINY)
    _add_config_flags(demo, real, skip=("data_dir", "test_domains"), say_default=lambda name: getattr(real, name)
                      if getattr(real, name) == getattr(tiny, name) else
                      f"{getattr(real, name)} or {getattr(tiny, name)}, by the preset above")
    for action in demo._actions:  # only flags the user gives override the preset the demo picks
        if action.dest != "help":
            action.default = argparse.SUPPRESS


def parser():
    """`clipood train`'s own parser (`clipood figure5` plans and starts its runs through it)."""
    return _add_train_arguments(Parser(prog="clipood train"))


def _add_train_arguments(train_parser):
    _add_config_flags(train_parser, TrainConfig())
    for action in train_parser._actions:
        if action.dest in ("data_dir", "test_domains"):
            action.required = True
    train_parser.set_defaults(command="train")
    return train_parser


def _add_config_flags(parser, defaults, skip=(), say_default=None):
    """A flag per TrainConfig field, whose default is its value in ``defaults``; its help says that value, or
    ``say_default(name)`` where given."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        option = flag(f.name)
        default = getattr(defaults, f.name)
        said = default if say_default is None else say_default(f.name)
        help_text = f.metadata["help"] + ("" if said is None else f" (default: {said})")
        if hints[f.name] is bool:
            parser.add_argument(option, action="store_true", help=f.metadata["help"])
        elif hints[f.name] is list:
            parser.add_argument(option, nargs="+", default=default, help=help_text)
        else:
            kind = {"int": int, "float": float}.get(hints[f.name].__name__, str)
            parser.add_argument(option, type=kind, default=default, help=help_text, choices=f.metadata.get("choices"))


def main(args):
    """`clipood train` or `clipood demo` (``args.command``) with its parsed arguments: 0 when the run ended or
    stopped as asked, 1 when it learned nothing (LearnedNothingError), 2 on bad input, 128 + the signal's number
    when a signal stopped it. What needs no model is refused before torch and open_clip are imported."""
    command = args.command
    chosen = {k: v for k, v in vars(args).items() if k != "command"}
    try:  # everything the command line alone can tell, before anything heavy is imported
        config = _demo_settings(DEMO_TINY, chosen) if command == "demo" else TrainConfig(**chosen)
        config.check()
    except DataError as error:
        return fail(command, error)

    # PIL, for the data; torch and open_clip come once the run's inputs are checked (standalone.train)
    from .standalone import train
    from .synthetic import make_demo_dataset

    try:
        if command == "demo":
            config = _demo_config(chosen)
        warning = random_init_warning(config.pretrained, config.lr, "--pretrained none", "--lr {}")
        if warning:
            print(f"clipood {command}: {warning}", file=sys.stderr)
        train(config, prepare_data=make_demo_dataset if command == "demo" else None)
    except LearnedNothingError as error:
        return fail(command, error, status=1)
    except (DataError, FileNotFoundError, ValueError, MissingPackageError, TrainingDivergedError) as error:
        return fail(command, error)
    except Interrupted as stop:
        print(f"\nclipood {command}: stopped by {stop}; {stop.kept}", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:  # before the run began (its own handler takes over from there)
        print(f"\nclipood {command}: interrupted before the run began; nothing was saved", file=sys.stderr)
        return 130
    return 0


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

"""``python -m dassl_trainers.train``: Dassl's training entry with CoOp's train.py arguments, for running
CLIPood without a CoOp or Dassl checkout at hand. Dassl's own datasets are always there; CoOp's are
registered by CoOp's code when ``--coop-root`` (or $COOP_ROOT) names a CoOp checkout.
"""
import argparse
import importlib
import os
import sys

from clipood_plugin import distributed

from . import TRAINER_NAME, register
from .distributed import quiet_unless_main

COOP_DATASETS = ("oxford_pets", "oxford_flowers", "fgvc_aircraft", "dtd", "eurosat", "stanford_cars", "food101",
                 "sun397", "caltech101", "ucf101", "imagenet", "imagenet_sketch", "imagenetv2", "imagenet_a",
                 "imagenet_r")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=str, default="", help="path to the datasets")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="", help="checkpoint directory to resume training from")
    parser.add_argument("--seed", type=int, default=-1, help="only a positive value fixes the seed")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="trainer config file")
    parser.add_argument("--dataset-config-file", type=str, default="", help="dataset config file")
    parser.add_argument("--trainer", type=str, default=TRAINER_NAME, help="name of the trainer")
    parser.add_argument("--backbone", type=str, default="", help="name of the backbone")
    parser.add_argument("--head", type=str, default="", help="name of the head")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="", help="load the model from this directory (eval-only)")
    parser.add_argument("--load-epoch", type=int, help="load the checkpoint of this epoch (eval-only)")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument("--coop-root", type=str, default=os.environ.get("COOP_ROOT", ""),
                        help="a CoOp checkout whose datasets to register (default: $COOP_ROOT)")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser.parse_args(argv)


def register_coop_datasets(coop_root):
    if not os.path.isfile(os.path.join(coop_root, "datasets", "oxford_pets.py")):
        raise FileNotFoundError(f"--coop-root {coop_root!r} is not a CoOp checkout (no datasets/oxford_pets.py)")
    sys.path.insert(0, os.path.abspath(coop_root))
    for name in COOP_DATASETS:
        importlib.import_module(f"datasets.{name}")


def build_cfg(args):
    from dassl.config import get_cfg_default

    cfg = get_cfg_default()
    for path in (args.dataset_config_file, args.config_file):
        if path:
            cfg.merge_from_file(path)
    from_args = {"DATASET.ROOT": args.root, "OUTPUT_DIR": args.output_dir, "RESUME": args.resume,
                 "SEED": args.seed if args.seed > 0 else None, "DATASET.SOURCE_DOMAINS": args.source_domains,
                 "DATASET.TARGET_DOMAINS": args.target_domains, "INPUT.TRANSFORMS": args.transforms,
                 "TRAINER.NAME": args.trainer, "MODEL.BACKBONE.NAME": args.backbone, "MODEL.HEAD.NAME": args.head}
    cfg.merge_from_list([item for key, value in from_args.items() if value for item in (key, value)])
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def main(argv=None):
    args = parse_args(argv)
    register()
    if args.coop_root:
        register_coop_datasets(args.coop_root)
    import torch
    from dassl.engine import build_trainer
    from dassl.utils import collect_env_info, set_random_seed, setup_logger

    cfg = build_cfg(args)
    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)
    if distributed.is_main():  # under torchrun, rank 0 alone writes the log
        setup_logger(cfg.OUTPUT_DIR)
    else:
        quiet_unless_main()
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
    print(f"** Arguments **\n{vars(args)}\n** Config **\n{cfg}\n** System info **\n{collect_env_info()}\n")
    trainer = build_trainer(cfg)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
    elif not args.no_train:
        trainer.train()


if __name__ == "__main__":
    main()

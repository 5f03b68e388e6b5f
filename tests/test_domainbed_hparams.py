"""The hparams registry entries and the paper configs (no DomainBed needed)."""
import json
import os
import subprocess
import sys

import pytest

from domainbed_adapter.class_names import FOLDER_CLASS_NAMES
from domainbed_adapter.hparams import ALGORITHM_NAMES, clipood_hparams, default_clipood_hparams

CONFIGS = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "domainbed")
PAPER_DATASETS = ("PACS", "VLCS", "OfficeHome", "TerraIncognita", "DomainNet")


def load_config(name):
    with open(os.path.join(CONFIGS, name)) as f:
        return json.load(f)


@pytest.mark.parametrize("dataset,lr", [("PACS", 5e-6), ("VLCS", 5e-6), ("TerraIncognita", 5e-6),
                                        ("OfficeHome", 1e-5), ("DomainNet", 1e-5)])
def test_defaults_are_the_papers_table1_settings(dataset, lr):
    hparams = default_clipood_hparams("CLIPood", dataset)
    assert hparams == {"clip_model": "ViT-B-16", "clip_pretrained": "openai", "prompt_template": "a photo of a {}.",
                       "clip_compile": "auto", "clip_precision": "auto", "clip_image_norm": "auto",
                       "class_names": FOLDER_CLASS_NAMES[dataset], "clip_transforms": "domainbed",
                       "open_class_ratio": 0.0, "steps": None, "lr": lr, "weight_decay": 0.1,
                       "batch_size": 12, "mms_lambda": 0.3, "bma_beta": 0.5,
                       "head": "text", "margin_kind": "adaptive", "averaging": "bma", "ema_decay": 0.999,
                       # SWAD's (averaging "swad"): the SWAD authors' config.yaml and PACS CHECKPOINT_FREQ
                       "swad_every": 200, "swad_n_converge": 3, "swad_n_tolerance": 6, "swad_tolerance_ratio": 0.3}


def test_only_clipood_has_margin_and_averaging_hparams():
    for name in ("CLIPERM", "CLIPZeroShot"):
        assert not {"mms_lambda", "bma_beta", "head", "margin_kind", "averaging", "ema_decay", "swad_every"} & set(
            default_clipood_hparams(name, "PACS"))


@pytest.mark.parametrize("dataset", ["Debug28", "Debug224"])
def test_debug_datasets_run_offline_with_batches_their_loader_can_fill(dataset):
    for seed in range(5):
        hparams = clipood_hparams("CLIPood", dataset, seed)
        assert hparams["clip_model"] == ("clipood-tiny", "clipood-tiny")
        assert hparams["clip_pretrained"] == (None, None)
        assert max(hparams["batch_size"]) <= 13  # 16 images per environment, 3 held out


def test_random_values_are_deterministic_across_processes_and_vary_with_the_seed():
    code = ("from domainbed_adapter.hparams import clipood_hparams; "
            "print(repr(sorted((k, repr(v[1])) for k, v in clipood_hparams('CLIPood', 'PACS', 3).items())))")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outputs) == 1
    lrs = {clipood_hparams("CLIPood", "PACS", seed)["lr"][1] for seed in range(1, 6)}
    assert len(lrs) == 5 and all(5e-6 / 10 ** 0.5 <= lr <= 5e-6 * 10 ** 0.5 for lr in lrs)


def test_unknown_algorithm_is_rejected():
    with pytest.raises(ValueError):
        clipood_hparams("ERM", "PACS", 0)


def test_table1_config_is_the_registry_default_and_steps_are_epochs_times_500():
    config = load_config("table1_domain_shift.json")
    assert set(config["datasets"]) == set(PAPER_DATASETS) and set(config["algorithms"]) == set(ALGORITHM_NAMES)
    for dataset, settings in config["datasets"].items():
        assert settings["steps"] == 500 * settings["epochs"]
        assert settings["clip_transforms"] == "clipood"  # the authors' pipeline; DomainBed's is the default
        assert settings["clip_precision"] == "auto"  # this project's numerics: fp32 master weights
        hparams = {key: value for key, value in settings.items() if key not in ("epochs", "steps", "clip_transforms")}
        defaults = default_clipood_hparams("CLIPood", dataset)
        assert {key: defaults[key] for key in hparams} == hparams


def test_table4_config_holds_the_in_the_wild_settings():
    datasets = load_config("table4_in_the_wild.json")["datasets"]
    assert datasets["OfficeHome"] == {"epochs": 10, "steps": 5000, "lr": 3e-6, "batch_size": 12,
                                         "weight_decay": 0.1, "mms_lambda": 0.1, "bma_beta": 0.1,
                                         "open_class_ratio": 0.5, "clip_transforms": "clipood",
                                         "clip_precision": "auto"}
    assert (datasets["DomainNet"]["lr"], datasets["DomainNet"]["mms_lambda"], datasets["DomainNet"]["bma_beta"],
            datasets["DomainNet"]["steps"]) == (5e-6, 0.1, 0.5, 10000)


@pytest.mark.parametrize("table", ["table1_domain_shift", "table4_in_the_wild"])
def test_the_paper_numerics_variant_is_the_same_sweep_in_the_authors_fp16(table):
    default, paper = load_config(f"{table}.json"), load_config(f"{table}_paper_numerics.json")
    assert paper["description"].startswith("Variant: the paper's numerics")
    assert default["description"].startswith("Variant: this project's numerics")
    assert {key: paper[key] for key in paper if key != "description"} == {
        **{key: default[key] for key in default if key != "description"},
        "datasets": {dataset: {**settings, "clip_precision": "authors-fp16"}
                     for dataset, settings in default["datasets"].items()}}


@pytest.mark.parametrize("variant, precision", [("", "auto"), ("_paper_numerics", "authors-fp16")])
def test_the_paper_sweeps_pass_the_authors_transforms_and_the_variants_precision_to_every_algorithm(variant,
                                                                                                   precision):
    import argparse
    import importlib.util
    spec = importlib.util.spec_from_file_location("launch_sweep", os.path.join(CONFIGS, "launch_sweep.py"))
    launch_sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_sweep)
    for name in (f"table1_domain_shift{variant}.json", f"table4_in_the_wild{variant}.json"):
        args = argparse.Namespace(hparams=None, datasets=None, algorithms=None, steps=None, n_trials=None,
                                  data_dir="D", output_dir="O", command_launcher="dummy", skip_confirmation=True)
        commands = launch_sweep.sweep_commands(load_config(name), args)
        assert commands
        for command in commands:
            hparams = json.loads(command[command.index("--hparams") + 1])
            assert (hparams["clip_transforms"], hparams["clip_precision"]) == ("clipood", precision), command

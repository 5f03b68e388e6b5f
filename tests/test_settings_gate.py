"""One gate for every setting, and no resume of a changed run (issue 21; the fault cases of
shared/faults/round2-failures.md named below). Each front end refuses a bad setting before it builds
anything, naming it as that front end spells it: `clipood train` (--mms-lambda, exit 2, one line), the
library (mms margin = ``margin``), DomainBed (the hparam ``mms_lambda``), Dassl (TRAINER.CLIPOOD.MMS_LAMBDA).
The real DomainBed and Dassl runs are in test_domainbed_integration.py and test_dassl_integration.py."""
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clipood_plugin.cli import main
from conftest import CLASSES

INF, NAN = float("inf"), float("nan")
PROJECT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- clipood train
@pytest.mark.parametrize("flags", [
    ["--mms-lambda", "-1"],  # F-L1
    ["--templates", "a {} of a {}"],  # F-M9
    ["--templates", "{name} is a {}"],  # F-M9
    ["--bma-beta", "inf"],
    ["--ema-decay", "1"],
])
def test_clipood_train_refuses_a_setting_out_of_range_in_one_line_with_exit_2(flags, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["train", "--data-dir", str(tmp_path / "data"), "--test-domains", "sketch", "--output-dir", str(out),
                 "--model", "clipood-tiny", "--pretrained", "none", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"clipood train: error: {flags[0]} "), err
    assert not out.exists()  # refused before anything is written


# ----------------------------------------------------------------------------- the library
@pytest.mark.parametrize("setting,value", [
    ("beta", INF),  # F-H1
    ("lr", INF),  # F-H4
    ("margin", NAN),  # F-H6
    ("margin", -5.0),  # F-L4
    ("logit_scale", 0.0), ("logit_scale", -100.0),  # F-L17
    ("input_mean", (0.5, 0.5)),  # F-L18
    ("templates", ["a {} of a {}"]), ("templates", ["{name} a {}"]),  # F-M10
    ("templates", ["a photo of a {0} and {}"]),  # F-M10
    ("weight_decay", NAN), ("ema_decay", 1.0), ("lr", "5e-6"),
])
def test_the_learner_refuses_a_bad_setting_naming_it(make_learner, setting, value):
    with pytest.raises(ValueError, match=rf"^{setting} must .*got"):
        make_learner(**{setting: value})


def trained_state(make_learner, batches, **settings):
    learner = make_learner(**settings)
    learner.update(*batches[0])
    return learner.state_dict()


@pytest.mark.parametrize("change,before", [
    (dict(margin=0.9), 0.3),  # F-H10 through the library
    (dict(margin_kind="fixed"), "adaptive"),  # F-H11
    (dict(templates=("a sketch of a {}.",)), ("a photo of a {}.",)),  # F-H12
    (dict(beta=0.3), 0.5),
    (dict(class_names=["wolf", "lynx", "mare", "terrier"]), CLASSES),
])
def test_resuming_with_a_changed_setting_is_refused_naming_the_old_and_new_value(make_learner, batches, change,
                                                                                 before):
    state = trained_state(make_learner, batches)
    target = make_learner(**change)
    weights = {key: value.clone() for key, value in target.model.state_dict().items()}
    (name, after), = change.items()
    with pytest.raises(ValueError, match=re.escape(f"{name} {before!r} -> {after!r}")):
        target.load_state_dict(state)
    assert target.step == 0 and all(torch.equal(weights[k], v) for k, v in target.model.state_dict().items())
    if name != "class_names":  # the predictor alone is no resume: it loads whatever the run was trained with
        target.load_state_dict({k: v for k, v in state.items() if k in ("format", "config", "class_names",
                                                                       "text_features", "step", "inference_encoder")})
        assert target.step == 1


def test_a_checkpoint_with_non_finite_features_or_weights_is_refused(make_learner, batches):  # F-L16
    state = trained_state(make_learner, batches)

    def poisoned(part):
        return {key: torch.full_like(value, NAN) if value.is_floating_point() else value
                for key, value in state[part].items()}

    for damaged in ({**state, "text_features": torch.full_like(state["text_features"], NAN)},
                    {**state, "inference_encoder": poisoned("inference_encoder")},
                    {**state, "image_encoder": poisoned("image_encoder")}):
        target = make_learner()
        with pytest.raises(ValueError, match="finite"):
            target.load_state_dict(damaged)
        assert torch.isfinite(target.predict(batches[1][0])).all()


# ----------------------------------------------------------------------------- DomainBed
@pytest.fixture
def domainbed_registry():
    from conftest import require

    require("domainbed")
    import domainbed_adapter

    domainbed_adapter.register()
    from domainbed import hparams_registry
    return hparams_registry


@pytest.mark.parametrize("given,named,shown", [
    ({"bma_beta": INF}, "hparam bma_beta", "got inf"),  # F-H2
    ({"lr": INF}, "hparam lr", "got inf"),  # F-H5
    ({"mms_lambda": NAN}, "hparam mms_lambda", "got nan"),  # F-H7
    ({"class_names": "dog"}, "hparam class_names", "the string 'dog'"),  # F-H9
    ({"lr": "5e-6"}, "hparam lr", "the string '5e-6'"),  # F-M11
    ({"mms_lambda": "0.3"}, "hparam mms_lambda", "the string '0.3'"),  # F-M12
    ({"bma_beta": "0.5"}, "hparam bma_beta", "the string '0.5'"),  # F-M13
    ({"bma_beta": None}, "hparam bma_beta", "got None"),  # F-M14
    ({"batch_size": "8"}, "hparam batch_size", "the string '8'"),  # F-M15
    ({"mms_lambda": -1.0}, "hparam mms_lambda", "got -1.0"),  # F-L2
    ({"mms_lamda": 0.5}, "unknown hparam 'mms_lamda'", "did you mean 'mms_lambda'?"),  # F-L5
    ({"unknown_key": 1}, "unknown hparam 'unknown_key'", "its hparams: "),  # F-L5
    ({"prompt_template": "a {} of a {}"}, "hparam prompt_template", "one positional '{}'"),
])
def test_domainbed_hparams_are_refused_naming_the_hparam(domainbed_registry, given, named, shown):
    from domainbed_adapter.hparams import check_hparams

    hparams = {**domainbed_registry.default_hparams("CLIPood", "Debug224"), **given}
    with pytest.raises(ValueError) as error:
        check_hparams("CLIPood", hparams, "Debug224")
    assert named in str(error.value) and shown in str(error.value)


@pytest.mark.parametrize("dataset", ["Debug224", "ColoredMNIST", "PACS", "DomainNet"])
def test_domainbeds_own_default_and_random_hparams_pass_the_gate(domainbed_registry, dataset):
    from domainbed_adapter.hparams import ALGORITHM_NAMES, check_hparams

    for algorithm in ALGORITHM_NAMES:
        for seed in range(4):  # seed 0 is the defaults
            hparams = (domainbed_registry.default_hparams(algorithm, dataset) if seed == 0
                       else domainbed_registry.random_hparams(algorithm, dataset, seed))
            assert {"batch_size", "data_augmentation", "resnet18"} <= set(hparams)  # DomainBed's own keys
            check_hparams(algorithm, hparams, dataset)


def test_an_hparam_for_another_clip_algorithm_is_unknown_to_this_one(domainbed_registry):
    from domainbed_adapter.hparams import check_hparams

    hparams = {**domainbed_registry.default_hparams("CLIPERM", "PACS"), "mms_lambda": 0.3}  # CLIPERM has no margin
    with pytest.raises(ValueError, match="unknown hparam 'mms_lambda' for CLIPERM"):
        check_hparams("CLIPERM", hparams, "PACS")


def test_the_domainbed_algorithm_reports_the_share_of_skipped_steps_which_train_py_averages(batches):  # F-L20
    from domainbed_adapter.algorithms import build_algorithm_classes
    from domainbed_adapter.hparams import default_clipood_hparams

    class AlgorithmBase(torch.nn.Module):  # DomainBed's Algorithm constructor contract
        def __init__(self, input_shape, num_classes, num_domains, hparams):
            super().__init__()

    hparams = {**default_clipood_hparams("CLIPood", "Debug224"), "steps": 4, "class_names": CLASSES}
    algorithm = build_algorithm_classes(AlgorithmBase)["CLIPood"]((3, 32, 32), len(CLASSES), 1, hparams)
    images, labels = batches[0]
    nan_images = images.clone()
    nan_images[0, 0, 0, 0] = NAN  # a non-finite loss: the step is skipped
    steps = [nan_images, images, nan_images, images]
    shares = [algorithm.update([(x, labels)])["skipped_share"] for x in steps]
    assert shares == [1.0, 0.0, 1.0, 0.0]
    assert np.mean(shares[:3]) == pytest.approx(2 / 3)  # train.py's mean over a window of 3 steps: 2 of 3 skipped


def test_a_domainbed_run_ended_by_sigterm_says_it_is_incomplete_and_still_ends_by_sigterm():
    code = ("import os, signal, weakref, torch\n"
            "from domainbed_adapter import algorithms\n"
            "from domainbed_adapter.hparams import default_clipood_hparams\n"
            "class Base(torch.nn.Module):\n"
            "    def __init__(self, *args):\n"
            "        super().__init__()\n"
            "hparams = {**default_clipood_hparams('CLIPood', 'Debug224'), 'steps': 3, 'class_names': ['a', 'b']}\n"
            "algorithm = algorithms.build_algorithm_classes(Base)['CLIPood']((3, 32, 32), 2, 1, hparams)\n"
            "algorithms._report_incomplete_run_on_sigterm(weakref.ref(algorithm))\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "print('still running')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGTERM and "still running" not in result.stdout, result.stderr
    assert "made 0 of the 3 optimizer steps" in result.stderr and "run the command again" in result.stderr


# ----------------------------------------------------------------------------- Dassl
@pytest.mark.needs("dassl")
@pytest.mark.parametrize("key,value", [
    ("TRAINER.CLIPOOD.BMA_BETA", INF),  # F-H3
    ("TRAINER.CLIPOOD.MMS_LAMBDA", NAN),  # F-H8
    ("TRAINER.CLIPOOD.MMS_LAMBDA", -1.0),  # F-L3
    ("OPTIM.LR", INF),
    ("TRAINER.CLIPOOD.TEMPLATES", ["{name} is a {}"]),
    ("INPUT.PIXEL_MEAN", [0.5, 0.5]),
])
def test_dassl_config_is_refused_naming_the_config_key(key, value):
    from dassl.config import get_cfg_default

    from dassl_trainers.config import add_config_defaults
    from dassl_trainers.trainer import CLIPood

    cfg = get_cfg_default()
    add_config_defaults(cfg)
    cfg.merge_from_file(str(PROJECT / "configs" / "dassl" / "trainers" / "CLIPood" / "vit_b16_dg.yaml"))
    CLIPood.check_cfg(None, cfg)  # the paper's config passes
    cfg.merge_from_list([key, value])
    with pytest.raises(ValueError, match=re.escape(f"{key} must ")):
        CLIPood.check_cfg(None, cfg)

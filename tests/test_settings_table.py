"""The one settings table: a new setting is one entry, and every front end (the library, `clipood train`,
DomainBed, Dassl) exposes it with the same range check and resume behaviour; the resume policy and the rules
that tie settings together answer alike from every front end, each front end spelling the settings its way."""
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from clipood_plugin.settings import SettingError, changed_settings, check_rules
from clipood_plugin.train_config import TrainConfig
from domainbed_adapter.hparams import check_hparams

PROJECT = Path(__file__).resolve().parent.parent

# A setting that does not exist, added as one table entry in a fresh interpreter; each front end is then asked
# for it. The expected spellings and message are written out here, not taken from the code.
NEW_SETTING = textwrap.dedent('''
    import importlib
    import pytest
    from clipood_plugin import settings, train_config
    from clipood_plugin.settings import CONFIG, TRAJECTORY, Setting, SettingError, _number

    entry = Setting("label_smoothing", "the label smoothing of the loss", _number(0, 1, high_open=True), 0.0,
                    TRAJECTORY, trains=True, learner=CONFIG, flag="label_smoothing", hparam="label_smoothing",
                    config_key="TRAINER.CLIPOOD.LABEL_SMOOTHING")
    settings.TABLE.append(entry)
    settings.SETTINGS[entry.name] = entry
    importlib.reload(train_config)  # TrainConfig is built from the table when its module is imported

    def refused(call, label):
        with pytest.raises(SettingError) as error:
            call()
        wanted = f"{label} must be a finite number in [0, 1), got 1.5 ({label}: the label smoothing of the loss)"
        assert wanted in str(error.value), str(error.value)

    # the library: an argument of CLIPoodLearner, recorded in its config, a trajectory key on resume
    from clipood_plugin.learner import TRAJECTORY_KEYS, CLIPoodLearner
    assert "label_smoothing" in TRAJECTORY_KEYS
    make = lambda **kw: CLIPoodLearner(model_name="clipood-tiny", pretrained=None, class_names=["a", "b"],
                                       total_steps=2, compile="off", device="cpu", **kw)
    learner = make(label_smoothing=0.1)
    assert learner.config["label_smoothing"] == 0.1 and make().config["label_smoothing"] == 0.0
    refused(lambda: make(label_smoothing=1.5), "label_smoothing")
    with pytest.raises(SettingError, match="label_smoothing 0.1 -> 0.2"):
        make(label_smoothing=0.2).load_state_dict(learner.state_dict())

    # clipood train: a flag with the default, the same range, not among the changes a resume allows
    from clipood_plugin.cli import build_parser
    from clipood_plugin.train_config import TrainConfig
    required = ["train", "--data-dir", "D", "--test-domains", "t"]
    assert build_parser().parse_args(required).label_smoothing == 0.0
    assert build_parser().parse_args([*required, "--label-smoothing", "0.25"]).label_smoothing == 0.25
    refused(TrainConfig(data_dir="D", test_domains=["t"], label_smoothing=1.5).check, "--label-smoothing")
    assert "label_smoothing" not in TrainConfig.RESUMABLE_CHANGES

    # DomainBed: an hparam of every algorithm with the default, checked by check_hparams
    from domainbed_adapter.hparams import check_hparams, default_clipood_hparams
    assert default_clipood_hparams("CLIPood", "PACS")["label_smoothing"] == 0.0
    refused(lambda: check_hparams("CLIPood", {"label_smoothing": 1.5}), "hparam label_smoothing")

    # Dassl: a key of the TRAINER.CLIPOOD node with the default, checked by the trainer's check_cfg
    from dassl.config import get_cfg_default
    from dassl_trainers.config import add_config_defaults, core_settings
    from dassl_trainers.trainer import CLIPood
    cfg = get_cfg_default()
    add_config_defaults(cfg)
    assert cfg.TRAINER.CLIPOOD.LABEL_SMOOTHING == 0.0
    cfg.merge_from_list(["OPTIM.NAME", "adamw", "OPTIM.LR_SCHEDULER", "cosine", "OPTIM.WARMUP_EPOCH", 0,
                         "TRAINER.CLIPOOD.LABEL_SMOOTHING", 0.25])
    assert core_settings(cfg)["label_smoothing"] == 0.25
    cfg.merge_from_list(["TRAINER.CLIPOOD.LABEL_SMOOTHING", 1.5])
    with pytest.raises(ValueError) as error:
        CLIPood.check_cfg(None, cfg)
    assert "TRAINER.CLIPOOD.LABEL_SMOOTHING must be a finite number in [0, 1), got 1.5" in str(error.value)
    print("every front end has it")
''')


@pytest.mark.needs("dassl")
def test_a_new_setting_is_one_table_entry_in_every_front_end():
    result = subprocess.run([sys.executable, "-c", NEW_SETTING], capture_output=True, text=True, timeout=600,
                            cwd=PROJECT, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "every front end has it" in result.stdout


# ----------------------------------------------------------------------------- the one resume policy
# one setting of each behaviour, as the issue defines them: the saved state's shape, the run's trajectory, a
# training hyperparameter that may change on request, and one that may change freely
CHANGED = {"head": ("text", "linear"), "margin": (0.3, 0.5), "lr": (5e-6, 1e-5), "compile": ("auto", "off")}
MUST_MATCH_TO_RESUME = {"head", "margin", "lr"}  # lr: unless the library's allow_hparam_change asks
MUST_MATCH_TO_LOAD = {"head"}  # a predictor (inference-only) load: the build settings only


def test_the_library_resumes_by_the_policy(make_learner, batches):
    base = dict(margin_kind="none")  # the linear head's rule
    saved = make_learner(**base, **{name: values[0] for name, values in CHANGED.items()})
    saved.update(*batches[0])
    for name, (_, other) in CHANGED.items():
        now = make_learner(**base, **{**{n: v[0] for n, v in CHANGED.items()}, name: other})
        if name in MUST_MATCH_TO_RESUME:
            with pytest.raises(SettingError, match=f"{name} {CHANGED[name][0]!r} -> {other!r}"):
                now.load_state_dict(saved.state_dict())
        else:
            now.load_state_dict(saved.state_dict())
        if name in MUST_MATCH_TO_LOAD:
            with pytest.raises(SettingError, match=name):
                now.load_state_dict(saved.state_dict(include_training_state=False))
        else:
            now.load_state_dict(saved.state_dict(include_training_state=False))


def field_of(name):
    """The TrainConfig field behind the flag of a core setting."""
    return TrainConfig.flag_of(name).removeprefix("--").replace("-", "_")


def test_clipood_train_and_figure5_resume_by_the_policy():
    first = {field_of(name): values[0] for name, values in CHANGED.items()}
    assert set(first) == {"head", "mms_lambda", "lr", "compile"}
    for name, (_, other) in CHANGED.items():
        field = field_of(name)
        kept = field in TrainConfig.RESUMABLE_CHANGES
        assert kept == (name not in MUST_MATCH_TO_RESUME), name  # clipood train has no allow_hparam_change
        changes = changed_settings(first, {**first, field: other},
                                   [key for key in first if key not in TrainConfig.RESUMABLE_CHANGES])
        assert [key for key, _, _ in changes] == ([] if kept else [field])


@pytest.mark.needs("dassl")
def test_the_dassl_trainer_rebuilds_for_the_build_settings_as_the_library_compares_them():
    from clipood_plugin.image_input import IMAGE_NORMS
    from dassl_trainers.trainer import CLIPood

    now = {"model_name": "clipood-tiny", "pretrained": None, "image_norm": IMAGE_NORMS["openai"].norm,
           "averaging": "bma", "zero_shot": False, "total_steps": 6, "head": "text", "margin": 0.3, "lr": 5e-6,
           "compile": "auto", "templates": ("a photo of a {}.",)}
    trainer = types.SimpleNamespace(learner=types.SimpleNamespace(config=now))
    changed = lambda saved: CLIPood._changed_build_settings(trainer, saved)
    for name, (_, other) in CHANGED.items():
        assert set(changed({**now, name: other})) == ({name} & MUST_MATCH_TO_LOAD)
    # a checkpoint saved before image_norm was recorded trained on OpenAI's input; a list is its tuple
    old = {key: value for key, value in now.items() if key != "image_norm"}
    assert changed({**old, "templates": ["a photo of a {}."]}) == {}
    assert changed({**old, "averaging": "ema"}) == {"averaging": "ema"}


# ----------------------------------------------------------------------------- cross-setting rules
# each rule's one message, with each front end's spelling of a setting and its value
def linear_head_message(head_linear, margin_kind_none):
    return (f"{head_linear} is standard fine-tuning (Eq. 1) with plain cross-entropy, without the margins of the "
            f"text head's metric softmax (margin_kind='none'); set {margin_kind_none}, not 'adaptive'")


def swad_message(averaging_swad):
    return (f"{averaging_swad} finds its window from the loss on held-out images of the training domains, and "
            "this run holds none out; ")


def open_classes_message(open_class_ratio):
    return f"{open_class_ratio} > 0 needs the text head: a linear head has no weights for the new classes; "


def raised(call):
    with pytest.raises(ValueError) as error:
        call()
    return str(error.value)


def dassl_cfg(*pairs):
    from dassl.config import get_cfg_default

    from dassl_trainers.config import add_config_defaults
    cfg = get_cfg_default()
    add_config_defaults(cfg)
    cfg.merge_from_list(["OPTIM.NAME", "adamw", "OPTIM.LR_SCHEDULER", "cosine", "OPTIM.WARMUP_EPOCH", 0,
                         "DATASET.NAME", "PACS", *pairs])
    return cfg


def train_config(**fields):
    return TrainConfig(data_dir="D", test_domains=["t"], **fields)


def test_the_linear_head_rule_is_one_message_in_the_library_and_clipood_train(make_learner):
    assert raised(lambda: make_learner(head="linear")) == linear_head_message("head='linear'", "margin_kind='none'")
    assert raised(train_config(head="linear").check) == linear_head_message("--head linear", "--margin-kind none")
    assert raised(lambda: check_hparams("CLIPood", {"head": "linear"})) == linear_head_message(
        "hparam head linear", "hparam margin_kind none")


@pytest.mark.needs("dassl")
def test_the_rules_are_one_message_in_dassls_check_cfg():
    from dassl_trainers.config import check_cross_settings
    from dassl_trainers.trainer import CLIPood

    assert linear_head_message("TRAINER.CLIPOOD.HEAD linear", "TRAINER.CLIPOOD.MARGIN_KIND none") in raised(
        lambda: CLIPood.check_cfg(None, dassl_cfg("TRAINER.CLIPOOD.HEAD", "linear")))
    assert open_classes_message("TRAINER.CLIPOOD.OPEN_CLASSES") in raised(lambda: CLIPood.check_cfg(None, dassl_cfg(
        "TRAINER.CLIPOOD.HEAD", "linear", "TRAINER.CLIPOOD.MARGIN_KIND", "none", "TRAINER.CLIPOOD.OPEN_CLASSES", True)))
    swad = dassl_cfg("TRAINER.CLIPOOD.AVERAGING", "swad")
    CLIPood.check_cfg(None, swad)  # whether the dataset has a val split is known once it is built
    check_cross_settings(swad, held_out=True)
    assert raised(lambda: check_cross_settings(swad, held_out=False)).startswith(
        swad_message("TRAINER.CLIPOOD.AVERAGING swad") + "PACS has no val split here")


def test_swad_needs_held_out_images_in_one_message():
    assert raised(lambda: check_rules({"averaging": "swad"}, held_out=False)).startswith(
        swad_message("averaging='swad'"))
    assert raised(train_config(averaging="swad", holdout_fraction=0).check) == \
        swad_message("--averaging swad") + "give --holdout-fraction > 0 (e.g. 0.2)"
    train_config(averaging="swad").check()
    assert raised(lambda: check_hparams("CLIPood", {"averaging": "swad"}, held_out=False)).startswith(
        swad_message("hparam averaging swad") + "DomainBed's train.py")
    check_hparams("CLIPood", {"averaging": "swad"})  # outside train.py: not known yet
    check_rules({"averaging": "swad"})


def test_open_classes_need_the_text_head_in_one_message():
    linear = {"head": "linear", "margin_kind": "none"}
    assert raised(lambda: check_rules({**linear, "open_class_ratio": 0.5})).startswith(
        open_classes_message("open_class_ratio"))
    assert raised(lambda: check_hparams("CLIPood", {**linear, "open_class_ratio": 0.5})).startswith(
        open_classes_message("hparam open_class_ratio"))
    check_hparams("CLIPood", {**linear, "open_class_ratio": 0.0})


# ----------------------------------------------------------------------------- bounds (#27)
TINY_STD = "0.5,0.5,0.5:1e-30,1,1"


def test_a_vanishing_std_is_refused_saying_the_bound(make_learner):
    for call in (lambda: make_learner(input_std=(1e-30, 1.0, 1.0)), lambda: make_learner(image_norm=TINY_STD),
                 train_config(image_norm=TINY_STD).check,
                 lambda: check_hparams("CLIPood", {"clip_image_norm": TINY_STD})):
        assert "a std must be >= 0.001" in raised(call)
    make_learner(input_std=(0.001, 1.0, 1.0))


@pytest.mark.needs("dassl")
def test_dassl_refuses_a_vanishing_std_saying_the_bound():
    from dassl_trainers.trainer import CLIPood

    normalized = ["INPUT.TRANSFORMS", ["normalize"], "INPUT.PIXEL_STD", [1e-30, 1.0, 1.0]]
    for pairs in (normalized, ["TRAINER.CLIPOOD.IMAGE_NORM", TINY_STD]):
        assert "a std must be >= 0.001" in raised(lambda: CLIPood.check_cfg(None, dassl_cfg(*pairs)))


def test_steps_have_an_upper_bound(capsys):
    from clipood_plugin.cli import main

    assert main(["train", "--data-dir", "D", "--test-domains", "t", "--steps", "99999999999999"]) == 2
    assert "--steps must be a whole number >= 1 and <= 10,000,000, got 99999999999999" in capsys.readouterr().err
    train_config(steps=10_000_000).check()


def test_one_class_is_refused(make_learner):
    assert "needs at least 2 classes" in raised(lambda: make_learner(class_names=["dog"]))


def test_pretrained_may_be_a_path(make_learner, tiny_weights):
    assert make_learner(pretrained=tiny_weights).config["pretrained"] == str(tiny_weights)
    assert "pretrained must be a string or a path" in raised(lambda: make_learner(pretrained=3))

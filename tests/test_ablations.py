"""The paper's analysis (Figure 5) as switches of one learner: the linear head (Eq. 1), the margin kinds and
the averagings inside the learner, each switch reaching it from `clipood train`, DomainBed's hparams registry
and a Dassl config, and the panel runner end to end."""
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from clipood_plugin.cli import main as clipood
from clipood_plugin.synthetic import make_demo_dataset

from conftest import CLASSES
from test_learner import roundtrip

PROJECT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the learner
def test_linear_head_starts_as_the_zero_shot_text_head(make_learner, batches):
    text, linear = make_learner(margin_kind="none"), make_learner(head="linear", margin_kind="none")
    images, labels = batches[0]
    assert torch.allclose(linear.predict(images), text.predict(images), rtol=1e-5, atol=1e-4)
    # Eq. 1's plain cross-entropy on the zero-shot logits is the first step's loss of both
    expected = F.cross_entropy(text.predict(images, averaged=False), labels).item()
    assert linear.update(images, labels)["loss"] == pytest.approx(expected, rel=1e-5)
    assert text.update(images, labels)["loss"] == pytest.approx(expected, rel=1e-5)


def test_linear_head_is_trained_and_averaged_with_the_encoder(make_learner, batches):
    learner = make_learner(head="linear", margin_kind="none", averaging="uniform")
    start = learner.model.classifier.weight.clone()
    states = []
    for images, labels in batches:
        learner.update(images, labels)
        states.append({k: v.clone() for k, v in learner.model.state_dict().items()})
    assert not torch.equal(learner.model.classifier.weight, start)
    averaged = learner.inference_encoder.state_dict()
    assert {"classifier.weight", "classifier.bias"} <= set(averaged)
    for key, value in averaged.items():  # the paper's theta_AVG over encoder and head
        if value.is_floating_point():
            expected = sum(s[key].double() for s in states) / len(states)
            assert torch.allclose(value.double(), expected, atol=1e-5), key
    # predict uses the averaged encoder and head: logits = W_avg normalize(f_avg) + b_avg
    images = batches[0][0]
    with torch.no_grad():
        features = F.normalize(learner.inference_encoder.encoder(images), dim=-1)
    expected = features @ averaged["classifier.weight"].T + averaged["classifier.bias"]
    assert torch.allclose(learner.predict(images), expected, atol=1e-4)


def test_linear_head_checkpoint_reloads_and_the_head_is_a_build_setting(make_learner, batches):
    learner = make_learner(head="linear", margin_kind="none")
    for images, labels in batches[:2]:
        learner.update(images, labels)
    reloaded = make_learner(seed=5, head="linear", margin_kind="none")
    reloaded.load_state_dict(roundtrip(learner.state_dict(include_training_state=False)))
    assert torch.equal(reloaded.predict(batches[3][0]), learner.predict(batches[3][0]))
    with pytest.raises(ValueError, match="head 'linear' -> 'text'"):
        make_learner().load_state_dict(learner.state_dict())


def test_linear_head_refuses_what_it_cannot_do(make_learner):
    with pytest.raises(ValueError, match="margin_kind='none'"):
        make_learner(head="linear")  # the default margin is MMS, which the linear head does not have
    with pytest.raises(ValueError, match="head"):
        make_learner(head="mlp")
    with pytest.raises(ValueError, match="margin_kind"):
        make_learner(margin_kind="additive")
    learner = make_learner(head="linear", margin_kind="none")
    learner.set_class_names(CLASSES)  # the same classes: fine
    with pytest.raises(ValueError, match="head='text'"):
        learner.set_class_names(["zebra", "sea lion"])


@pytest.mark.parametrize("margin_kind", ["fixed", "none"])
def test_margin_kind_reaches_the_training_loss(make_learner, batches, margin_kind):
    learner = make_learner(margin=0.5, margin_kind=margin_kind)
    images, labels = batches[0]
    zero_shot = learner.predict(images, averaged=False).double()  # s * S(I, T_c)
    margins = 0.5 * (torch.arange(len(CLASSES)) != labels[:, None]) if margin_kind == "fixed" else 0.0
    expected = F.cross_entropy(zero_shot + learner.logit_scale * margins, labels).item()
    assert learner.update(images, labels)["loss"] == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- from each front end
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("shapes"), images_per_class=3)


TINY = ["--model", "clipood-tiny", "--pretrained", "none", "--lr", "1e-3", "--batch-size", "2", "--workers", "0",
        "--compile", "off"]


def test_clipood_train_flags_reach_the_learner(data_dir, tmp_path, capsys):
    common = ["train", "--data-dir", str(data_dir), "--test-domains", "sketch", "--steps", "2", *TINY]
    assert clipood([*common, "--output-dir", str(tmp_path / "linear"), "--head", "linear", "--margin-kind", "none",
                    "--averaging", "ema", "--ema-decay", "0.5"]) == 0
    config = torch.load(tmp_path / "linear" / "model.pt", weights_only=True)["config"]
    assert (config["head"], config["margin_kind"], config["averaging"], config["ema_decay"]) == ("linear", "none", "ema", 0.5)
    assert clipood([*common, "--output-dir", str(tmp_path / "refused"), "--head", "linear"]) == 2
    assert "margin_kind='none'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        clipood([*common, "--output-dir", str(tmp_path / "x"), "--margin-kind", "additive"])


@pytest.mark.needs("domainbed", "wilds")
def test_domainbed_hparams_reach_the_learner():
    import domainbed_adapter
    domainbed_adapter.register()
    from domainbed import algorithms, hparams_registry

    hparams = hparams_registry.default_hparams("CLIPood", "Debug224")
    assert {k: hparams[k] for k in ("head", "margin_kind", "averaging", "ema_decay")} == {
        "head": "text", "margin_kind": "adaptive", "averaging": "bma", "ema_decay": 0.999}
    hparams.update(head="linear", margin_kind="none", averaging="uniform", steps=2, class_names=["a", "b"])
    algorithm = algorithms.get_algorithm_class("CLIPood")((3, 32, 32), 2, 2, hparams)
    config = algorithm.learner.config
    assert (config["head"], config["margin_kind"], config["averaging"]) == ("linear", "none", "uniform")
    algorithm.update([(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))])
    assert algorithm.learner.averager.step == 1


@pytest.mark.needs("dassl")
def test_dassl_config_keys_reach_the_learner():
    from dassl.config import get_cfg_default

    from clipood_plugin import CLIPoodLearner
    from dassl_trainers.config import add_config_defaults
    from dassl_trainers.trainer import CLIPood

    cfg = get_cfg_default()
    add_config_defaults(cfg)
    cfg.merge_from_file(str(PROJECT / "configs" / "dassl" / "trainers" / "CLIPood" / "vit_b16_dg.yaml"))
    cfg.merge_from_list(["MODEL.BACKBONE.NAME", "clipood-tiny", "TRAINER.CLIPOOD.PRETRAINED", "",
                         "TRAINER.CLIPOOD.HEAD", "linear", "TRAINER.CLIPOOD.MARGIN_KIND", "none",
                         "TRAINER.CLIPOOD.AVERAGING", "ema", "TRAINER.CLIPOOD.EMA_DECAY", 0.9])
    CLIPood.check_cfg(None, cfg)
    settings = CLIPood._learner_settings(types.SimpleNamespace(cfg=cfg, device="cpu"))
    learner = CLIPoodLearner(**settings, class_names=["a", "b"], total_steps=2)
    assert {k: learner.config[k] for k in ("head", "margin_kind", "averaging", "ema_decay")} == {
        "head": "linear", "margin_kind": "none", "averaging": "ema", "ema_decay": 0.9}
    for key, value, message in [("TRAINER.CLIPOOD.HEAD", "mlp", "TRAINER.CLIPOOD.HEAD must be one of"),
                                ("TRAINER.CLIPOOD.MARGIN_KIND", "additive", "TRAINER.CLIPOOD.MARGIN_KIND must be one of"),
                                ("TRAINER.CLIPOOD.AVERAGING", "swa", "TRAINER.CLIPOOD.AVERAGING must be one of"),
                                ("TRAINER.CLIPOOD.OPEN_CLASSES", True, "set HEAD text")]:
        wrong = cfg.clone()
        wrong.merge_from_list([key, value])
        with pytest.raises(ValueError, match=message):
            CLIPood.check_cfg(None, wrong)


# ----------------------------------------------------------------------------- the panel runner
def load_runner():
    from clipood_plugin import figure5

    return figure5


def test_the_runner_is_reached_from_clipood_and_from_its_old_path(tmp_path):
    """`clipood figure5 ...` and `python configs/figure5/figure5.py ...` plan the same runs from the paper's
    panels (which the package carries: configs/ is not installed)."""
    outputs = []
    for command in (["-m", "clipood_plugin", "figure5"], [str(PROJECT / "configs" / "figure5" / "figure5.py")]):
        result = subprocess.run([sys.executable, *command, "run", "--output-dir", str(tmp_path), "--dry-run",
                                 "--data-dir", "D", "--test-domains", "t"], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1] and outputs[0].count("clipood train") == 19


def test_dry_run_plans_each_distinct_setting_of_the_papers_panels_once(tmp_path, capsys):
    runner = load_runner()
    assert runner.main(["run", "--output-dir", str(tmp_path), "--dry-run", "--data-dir", "D", "--test-domains", "t",
                        "--steps", "9"]) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if line.startswith("clipood train")]
    assert not list(tmp_path.iterdir())  # a dry run writes nothing
    assert len(commands) == 19  # WiSE-FT's row evaluates the run of averaging none
    # the method itself is a row of (a), (c), (d) and the beta sweep: one run
    assert sum(command.endswith(f"--output-dir {tmp_path}/runs/clipood") for command in commands) == 1
    assert all(" --data-dir D --test-domains t --steps 9 " in command for command in commands)
    assert any(command.endswith("--head linear --margin-kind none --averaging none --output-dir "
                                f"{tmp_path}/runs/margin_kind-none_head-linear_averaging-none") for command in commands)
    for lam in ("0.1", "0.5", "1.0"):
        assert sum(f"--mms-lambda {lam} " in command for command in commands) == 2  # fixed and adaptive
    assert sum("--bma-beta" in command for command in commands) == 4  # 0.1, 0.3, 1.0, 2.0; 0.5 is the default


def test_runner_trains_the_panels_and_the_summary_tables_their_results(data_dir, tmp_path, capsys):
    runner = load_runner()
    panels = {"panels": {
        "b": {"title": "heads", "rows": [{"label": "linear", "settings": {"head": "linear", "margin_kind": "none",
                                                                          "averaging": "none"}},
                                         {"label": "text", "settings": {"margin_kind": "none", "averaging": "none"}}]},
        "d": {"title": "averaging", "rows": [{"label": "uniform", "settings": {"averaging": "uniform"}},
                                             {"label": "fixed margin", "settings": {"margin_kind": "fixed"}}]},
        "e": {"title": "not run yet", "rows": [{"label": "beta 2", "settings": {"bma_beta": 2.0}}]}}}
    config = tmp_path / "panels.json"
    config.write_text(json.dumps(panels))
    out = tmp_path / "out"
    common = ["run", "--output-dir", str(out), "--config", str(config), "--data-dir", str(data_dir),
              "--test-domains", "sketch", "painting", "--steps", "2", *TINY]
    assert runner.main([*common, "--panels", "b", "--stop-after", "1"]) == 0  # interrupted after one step
    assert not list((out / "runs").glob("*/results.json")) and len(list((out / "runs").glob("*/checkpoint.pt"))) == 2
    assert runner.main([*common, "--panels", "b", "d"]) == 0  # resumes the two, trains the others
    assert "--resume" in capsys.readouterr().out
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["averaging-uniform", "margin_kind-fixed", "margin_kind-none_averaging-none",
                    "margin_kind-none_head-linear_averaging-none"]
    saved = torch.load(out / "runs" / "margin_kind-fixed" / "model.pt", weights_only=True)["config"]
    assert (saved["margin_kind"], saved["head"], saved["averaging"]) == ("fixed", "text", "bma")
    capsys.readouterr()
    assert runner.main([*common, "--panels", "b"]) == 0  # finished runs are not trained again
    assert capsys.readouterr().out.count("done: ") == 2
    assert runner.main([*common, "--lr", "0.1", "--panels", "b"]) == 2  # finished with other settings

    assert runner.main(["summary", str(out), "--markdown"]) == 1  # panel e is not run: a row without values
    markdown = capsys.readouterr().out
    for key, panel in panels["panels"].items():
        assert f"### {panel['title']}: test accuracy (%)" in markdown
    assert "| setting | sketch | painting | mean | last weights, mean |" in markdown
    results = json.loads((out / "runs" / "averaging-uniform" / "results.json").read_text())
    sketch, painting = results["accuracy"]["bma"]["sketch"], results["accuracy"]["bma"]["painting"]
    final = sum(results["accuracy"]["final"][d] for d in ("sketch", "painting")) / 2
    assert f"| uniform | {sketch:.1f} | {painting:.1f} | {(sketch + painting) / 2:.1f} | {final:.1f} |" in markdown
    assert "| beta 2 | not run | not run | not run | not run |" in markdown
    assert runner.main(["summary", str(out)]) == 1
    plain = capsys.readouterr().out
    assert re.search(rf"^uniform +{sketch:.1f} +{painting:.1f} ", plain, re.MULTILINE)

    # results that cannot be used: listed, never a traceback
    nan_run = out / "runs" / "averaging-uniform" / "results.json"  # F-L14: NaN is written as null
    nan_run.write_text(json.dumps({**results, "accuracy": {**results["accuracy"], "bma": {**results["accuracy"]["bma"],
                                                                                          "painting": None}}}))
    truncated = out / "runs" / "margin_kind-fixed" / "results.json"  # F-M22
    truncated.write_text(truncated.read_text()[:200])
    assert runner.main(["summary", str(out)]) == 1
    plain = capsys.readouterr().out
    assert re.search(r"^uniform +left out +left out", plain, re.MULTILINE)
    assert f"averaging-uniform: {nan_run}: the accuracy on painting is None, not a number" in plain
    assert f"margin_kind-fixed: {truncated} unreadable (" in plain
    assert runner.main([*common, "--panels", "d"]) == 2  # the runner does not go on past it either
    error = capsys.readouterr().out
    assert f"figure5: error: {nan_run}: the accuracy on painting is None" in error and "Traceback" not in error
    manifest = out / "figure5.json"  # F-M23
    manifest.write_text(manifest.read_text()[:50])
    assert runner.main(["summary", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "is not the manifest `clipood figure5 run` writes" in error


def test_panel_d_prints_all_six_averaging_rows_on_one_data_set(data_dir, tmp_path, capsys):
    """Figure 5 (d) as the package's panels give it: none, uniform, EMA, BMA, SWAD and WiSE-FT; the WiSE-FT
    row is the run of averaging none at the alpha best on its holdout, not a run of its own."""
    runner = load_runner()
    out = tmp_path / "out"
    assert runner.main(["run", "--output-dir", str(out), "--panels", "d", "--data-dir", str(data_dir),
                        "--test-domains", "sketch", "--steps", "2", *TINY]) == 0
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "averaging-ema", "averaging-none", "averaging-swad", "averaging-uniform", "clipood"]
    capsys.readouterr()
    assert runner.main(["summary", str(out)]) == 1  # panels a-c and the beta sweep are not run
    table = capsys.readouterr().out.split("Figure 5(d)")[1].split("\n\n")[1]
    rows = table.splitlines()[1:]
    assert [row.split("  ")[0] for row in rows] == [
        "none (last weights)", "uniform, theta_1..theta_T", "EMA, decay 0.999", "BMA, beta 0.5",
        "SWAD (Cha et al., 2021)", rows[5].split("  ")[0]]
    assert all("not run" not in row and "left out" not in row for row in rows)
    results = json.loads((out / "runs" / "averaging-none" / "results.json").read_text())
    wise_ft = results["wise_ft"]
    best = next(entry for entry in wise_ft["curve"] if entry["alpha"] == wise_ft["best_alpha"])
    assert rows[5].startswith(f"WiSE-FT of the last weights (Wortsman et al., 2022), alpha {wise_ft['best_alpha']:g} "
                              "(best on the holdout) ")
    assert rows[5].split()[-2] == f"{best['accuracy']['sketch']:.1f}"
    swad = json.loads((out / "runs" / "averaging-swad" / "results.json").read_text())
    assert swad["config"]["averaging"] == "swad" and rows[4].split()[-2] == f"{swad['test_mean']['bma']:.1f}"

"""The one write guard (clipood_plugin.write_guard) and the one check of pretrained weights
(clipood_plugin.pretrained_check), through the commands that use them: no command replaces a file it reads, a
file of a `clipood train` run, or a file it did not write (without --overwrite); weights named with --pretrained
that are not the run's are refused wherever a text tower or theta_0 is rebuilt from them. And the core reads
the adapters' checkpoints without naming them (they register where their framework keeps the learner state)."""
import ast
import json
import os
from pathlib import Path

import pytest
import torch

import clipood_plugin
from clipood_plugin import CLIPoodLearner
from clipood_plugin.cli import main
from clipood_plugin.results_table import Cell, Report, Row, Table, print_and_write
from clipood_plugin.settings import DataError
from clipood_plugin.synthetic import make_demo_dataset
from clipood_plugin.write_guard import check_writes
from pretrained_cache import random_weights

CLASSES = ["circle", "square", "star", "triangle"]


def run(*argv):
    return main(list(map(str, argv)))


def snapshot(*paths):
    return {path: path.read_bytes() for path in paths}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("shapes"), images_per_class=2)


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory):
    """clipood-tiny weights of another seed than tiny_weights: not the weights the run started from."""
    path = tmp_path_factory.mktemp("other") / "tiny_other.pt"
    torch.save(random_weights("clipood-tiny", seed=99), path)
    return path


@pytest.fixture(scope="module")
def run_dir(tiny_weights, tmp_path_factory):
    """A `clipood train`-like run folder: its model.pt (a trained tiny learner) and results.json."""
    torch.manual_seed(0)
    learner = CLIPoodLearner(model_name="clipood-tiny", pretrained=str(tiny_weights), class_names=CLASSES,
                             total_steps=1, lr=1e-2, device="cpu")
    learner.update(torch.randn(4, 3, 32, 32), torch.arange(4))
    folder = tmp_path_factory.mktemp("run")
    torch.save(learner.state_dict(include_training_state=False), folder / "model.pt")
    (folder / "results.json").write_text(json.dumps({"accuracy": {"bma": {"sketch": 50.0}}}))
    return folder


def evaluate(model, data_dir, *more):
    return run("evaluate", model, "--data-dir", data_dir, "--domains", "sketch", "--workers", 0, *more)


def one_line(capsys, *phrases):
    """Asserts that stderr is one line, with each of ``phrases``; returns it."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and all(phrase in err for phrase in phrases), err
    return err


# ----------------------------------------------------------------------------- the guard itself
def test_the_guard_refuses_inputs_folders_run_files_and_files_of_others(tmp_path):
    def check(path, **options):
        check_writes({path: "OUT"}, "clipood thing", "OUT", **options)

    read = tmp_path / "input.pt"
    read.write_bytes(b"weights")
    with pytest.raises(DataError, match="is an input of clipood thing: name OUT elsewhere"):
        check(tmp_path / "sub" / ".." / "input.pt", reads=[read], overwrite=True)  # another spelling of the input
    link = tmp_path / "hard_link.pt"
    os.link(read, link)
    with pytest.raises(DataError, match="is an input of clipood thing"):
        check(link, reads=[read], overwrite=True)  # the same file under another name
    with pytest.raises(DataError, match="is a folder"):
        check(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"model")
    for name in ("model.pt", "results.json", "checkpoint.pt", "results.png"):  # there or not: the run's names
        with pytest.raises(DataError, match="is a file of the `clipood train` run"):
            check(run / name, overwrite=True)
    check(tmp_path / "results.json")  # the same name where no run is, and nothing there yet
    theirs = tmp_path / "theirs.json"
    theirs.write_text("{}")
    with pytest.raises(DataError, match="exists and was not written by clipood thing: .* pass --overwrite"):
        check(theirs)
    check(theirs, overwrite=True)
    check(theirs, written_here=lambda path: path.read_text() == "{}")  # recognized as its own
    assert theirs.read_text() == "{}"  # the guard writes nothing


# ----------------------------------------------------------------------------- clipood evaluate --output
def test_evaluate_refuses_an_output_onto_its_inputs_and_a_runs_files(run_dir, data_dir, tiny_weights, tmp_path,
                                                                    capsys):
    model = run_dir / "model.pt"
    names = tmp_path / "names.txt"
    names.write_text("\n".join(CLASSES))
    before = snapshot(model, run_dir / "results.json", tiny_weights, names)
    cases = [(model, [], "is an input of the evaluation"),  # E47: the model replaced by its evaluation
             (model, ["--overwrite"], "is an input of the evaluation"),
             (tiny_weights, ["--pretrained", tiny_weights, "--overwrite"], "is an input of the evaluation"),
             (names, ["--class-names-file", names, "--overwrite"], "is an input of the evaluation"),
             (run_dir / "results.json", ["--overwrite"], "is a file of the `clipood train` run"),
             (run_dir / "checkpoint.pt", [], "is a file of the `clipood train` run")]
    for output, more, message in cases:
        assert evaluate(model, data_dir, "--output", output, *more) == 2, (output, more)
        one_line(capsys, "clipood evaluate: error:", message)
    assert snapshot(*before) == before and not (run_dir / "checkpoint.pt").exists()


def test_evaluate_replaces_its_own_output_and_another_file_only_with_overwrite(run_dir, data_dir, tmp_path, capsys):
    copy = tmp_path / "copy_of_results.json"  # E52: a copy of a run's results.json
    copy.write_bytes((run_dir / "results.json").read_bytes())
    before = snapshot(copy)
    assert evaluate(run_dir / "model.pt", data_dir, "--output", copy) == 2
    one_line(capsys, "not written by clipood evaluate", "--overwrite")
    assert snapshot(copy) == before
    assert evaluate(run_dir / "model.pt", data_dir, "--output", copy, "--overwrite") == 0
    first = json.loads(copy.read_text())
    assert first["written_by"] == "clipood evaluate" and list(first["accuracy"]) == ["sketch"]
    assert evaluate(run_dir / "model.pt", data_dir, "--output", copy) == 0  # its own: replaced without asking


def test_evaluate_refuses_the_json_of_the_export_it_reads(run_dir, data_dir, tmp_path, capsys):
    exported = tmp_path / "exported.pt"
    assert run("export", run_dir / "model.pt", exported) == 0
    metadata = exported.with_suffix(".json")
    before = snapshot(metadata)
    assert evaluate(exported, data_dir, "--output", metadata, "--overwrite") == 2
    one_line(capsys, "is an input of the evaluation")
    assert snapshot(metadata) == before


# ----------------------------------------------------------------------------- the run's own pretrained weights
def test_pretrained_weights_that_are_not_the_runs_are_refused_everywhere(run_dir, data_dir, tiny_weights,
                                                                        other_weights, tmp_path, capsys):
    model = run_dir / "model.pt"
    for more in (["--wise-ft", "0,1"],  # E39: theta_0 from other weights
                 ["--class-names", ",".join(["hexagon", *CLASSES])]):  # E40: other class names, other text tower
        assert evaluate(model, data_dir, "--pretrained", other_weights, *more) == 2
        one_line(capsys, str(other_weights), "not the weights the run started from", "--pretrained")
    with pytest.raises(DataError, match="not the weights the run started from"):
        clipood_plugin.load_learner(model, device="cpu", pretrained=other_weights)
    learner = clipood_plugin.load_learner(model, device="cpu")
    with pytest.raises(DataError, match="not the weights the run started from"):
        clipood_plugin.pretrained_weights(learner, other_weights)
    # the run's own weights found elsewhere (a copy) pass, for both
    copy = tmp_path / "copy_of_tiny.pt"
    copy.write_bytes(tiny_weights.read_bytes())
    assert evaluate(model, data_dir, "--pretrained", copy, "--wise-ft", "0,1",
                    "--class-names", ",".join(["hexagon", *CLASSES])) == 0


def test_an_empty_pretrained_file_is_one_line_naming_it(run_dir, data_dir, tmp_path, capsys):
    empty = tmp_path / "empty.pt"  # E38
    empty.write_bytes(b"")
    assert evaluate(run_dir / "model.pt", data_dir, "--wise-ft", "0,1", "--pretrained", empty) == 2
    one_line(capsys, f"{empty} is not a readable checkpoint")


def test_an_export_without_its_json_says_the_json_is_missing(run_dir, data_dir, tmp_path, capsys):
    exported = tmp_path / "exported.pt"  # X06
    assert run("export", run_dir / "model.pt", exported) == 0
    lonely = tmp_path / "lonely.pt"
    lonely.write_bytes(exported.read_bytes())
    assert evaluate(lonely, data_dir) == 2
    assert "export takes" not in one_line(capsys, str(tmp_path / "lonely.json"), "missing")


def test_a_byte_order_mark_is_no_part_of_the_first_class_name(run_dir, data_dir, tmp_path):
    names = tmp_path / "names_bom.txt"  # E24
    names.write_bytes(b"\xef\xbb\xbf" + "\n".join(CLASSES).encode())
    output = tmp_path / "out.json"
    assert evaluate(run_dir / "model.pt", data_dir, "--class-names-file", names, "--output", output) == 0
    assert json.loads(output.read_text())["class_names"] == CLASSES


def test_class_names_missing_a_folder_are_shown_with_repr(run_dir, data_dir, capsys):
    assert evaluate(run_dir / "model.pt", data_dir, "--class-names", "\u200bcircle,square,star,triangle") == 2
    one_line(capsys, "['circle']", "'\\u200bcircle'")


# ----------------------------------------------------------------------------- summaries and figure5
def test_a_summary_replaces_only_the_tables_it_wrote(tmp_path, capsys):
    report = Report([Table("t", ["a"], [Row("ours", {"a": Cell.over([1.0, 2.0], 2)})])], missing=[])
    foreign = tmp_path / "notes.md"
    foreign.write_text("my notes")
    assert print_and_write(report, str(tmp_path / "notes"), str(tmp_path), "summary") == 2
    one_line(capsys, f"{foreign} exists and was not written by clipood summary", "--overwrite")
    assert foreign.read_text() == "my notes" and not (tmp_path / "notes.csv").exists()
    assert print_and_write(report, str(tmp_path / "notes"), str(tmp_path), "summary", overwrite=True) == 0
    assert print_and_write(report, str(tmp_path / "notes"), str(tmp_path), "summary") == 0  # its own
    assert "ours" in foreign.read_text() and (tmp_path / "notes.csv").read_text().startswith("table,row")


@pytest.mark.parametrize("summary", ["domainbed", "base2new", "imagenet"])
def test_every_summary_takes_overwrite(summary, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run("summary", summary, tmp_path, "--overwrite")  # nothing to summarize there: exit 2
    err = capsys.readouterr().err
    assert "error" in err and "unrecognized arguments" not in err, err


def test_figure5_keeps_a_manifest_it_did_not_write(tmp_path, capsys):
    from clipood_plugin.figure5 import main as figure5

    manifest = tmp_path / "figure5.json"
    manifest.write_text('{"mine": 1}')
    assert figure5(["run", "--output-dir", str(tmp_path), "--data-dir", "d", "--test-domains", "t"]) == 2
    assert "figure5.json exists and was not written by clipood figure5 run" in capsys.readouterr().err
    assert manifest.read_text() == '{"mine": 1}'


# ----------------------------------------------------------------------------- the core names no adapter
def test_the_core_names_no_adapter_nor_where_it_keeps_the_learner():
    adapters = ("domainbed", "dassl", "domainbed_adapter", "dassl_trainers")
    for source in Path(clipood_plugin.__file__).parent.glob("*.py"):
        tree = ast.parse(source.read_text())
        strings = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
                   and isinstance(node.value, str)]
        assert not {"model_dict", "clipood_learner"} & set(strings), source
        assert not any(isinstance(node, ast.Tuple) and [getattr(e, "value", None) for e in node.elts][:2]
                       == ["state_dict", "learner"] for node in ast.walk(tree)), source
        imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        imported += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
        assert not [name for name in imported if name.split(".")[0] in adapters], source


def test_the_adapters_register_where_their_framework_keeps_the_learner_state():
    from clipood_plugin.checkpoint_format import learner_state_locations

    assert set(learner_state_locations()) >= {("DomainBed model.pkl", ("model_dict", "clipood_learner")),
                                              ("Dassl checkpoint", ("state_dict", "learner"))}


def test_train_never_clears_the_pretrained_weights_it_reads(tmp_path):
    """write_guard.check_run_outputs, the guard `clipood train` calls before it writes or clears its run files."""
    from clipood_plugin.write_guard import check_run_outputs

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.pt").write_bytes(b"an earlier run's model, now the weights of this one")
    with pytest.raises(DataError, match="is an input of the run .*: name --output-dir elsewhere"):
        check_run_outputs(run_dir, str(run_dir / "model.pt"))
    check_run_outputs(run_dir, str(tmp_path / "tiny.pt"))  # its own files are the run's to keep or replace
    check_run_outputs(run_dir, "openai")

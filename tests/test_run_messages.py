"""`clipood train` on data or an output folder it cannot use: one line naming the domain or the path and the
fix, exit 2, no traceback."""
import shutil

import pytest

from clipood_plugin.cli import main
from clipood_plugin.synthetic import make_demo_dataset

FAST = ["--model", "clipood-tiny", "--pretrained", "none", "--lr", "1e-3", "--workers", "0", "--steps", "2"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("shapes"), images_per_class=6)


def error_line(capsys):
    """The one line of the error (after the progress bar, if the run got that far), and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_a_training_domain_smaller_than_the_batch_is_named_and_the_batch_is_said_to_be_per_domain(data_dir, tmp_path,
                                                                                                 capsys):
    """Round 3, I04: 53 training images in all, one domain of 1: the batch of 4 is per domain, and that domain
    is the one that cannot fill it."""
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    for path in sorted((data / "photo").rglob("*.png"))[1:]:
        path.unlink()
    for name in ("square", "star", "triangle"):  # photo keeps one image of one class
        (data / "photo" / name).rmdir()
    code = main(["train", "--data-dir", str(data), "--test-domains", "sketch", "--output-dir", str(tmp_path / "out"),
                 "--batch-size", "4", "--holdout-fraction", "0", "--allow-missing-classes", *FAST])
    line = error_line(capsys)
    assert code == 2
    assert "training domain 'photo' has 1 training image(s), fewer than the batch size 4, which is per training " \
           "domain" in line and "--batch-size" in line


def test_a_file_where_the_tensorboard_folder_goes_is_named_with_the_fix(data_dir, tmp_path, capsys):
    """Round 3, T06: OUTPUT_DIR/tensorboard a file ended in a FileExistsError traceback."""
    pytest.importorskip("tensorboard")
    out = tmp_path / "out"
    out.mkdir()
    (out / "tensorboard").write_text("my notes")
    code = main(["train", "--data-dir", str(data_dir), "--test-domains", "sketch", "--output-dir", str(out),
                 "--batch-size", "4", *FAST])
    line = error_line(capsys)
    assert code == 2
    assert f"{out / 'tensorboard'}" in line and "it is a file: move or remove it" in line
    assert (out / "tensorboard").read_text() == "my notes"

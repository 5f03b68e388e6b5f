"""`clipood train` refuses what needs no model before torch and open_clip are imported (issue #27 item 8): each
refusal below comes with torch blocked from import. How long they take is measured in bench/fast_errors.py."""
import pytest
from test_imports import clipood_without_torch

from clipood_plugin.cuda_driver import cuda_device_count
from clipood_plugin.files import claim_output_dir
from clipood_plugin.synthetic import make_demo_dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("shapes"), images_per_class=2)


def refused(result, message):
    """Exit 2, one line naming the problem, and torch never imported."""
    assert result.returncode == 2, result.stderr
    error = result.stderr.strip()
    assert len(error.splitlines()) == 1 and error.startswith("clipood train: error: ") and message in error, error
    assert result.stdout.rstrip().endswith("torch imported: False"), result.stdout


def train(data_dir, out, *extra, cwd):
    return clipood_without_torch("train", "--data-dir", data_dir, "--test-domains", "sketch", "--output-dir", out,
                                 "--model", "clipood-tiny", "--pretrained", "none", "--lr", "2e-3", *extra, cwd=cwd)


@pytest.mark.skipif(cuda_device_count() > 0, reason="this machine has a CUDA GPU")
def test_a_cuda_device_on_a_machine_without_one(data_dir, tmp_path):
    refused(train(data_dir, tmp_path / "out", "--device", "cuda", cwd=tmp_path), "--device cuda: no CUDA GPU")


def test_an_output_folder_in_use_by_another_run(data_dir, tmp_path):
    out = tmp_path / "out"
    with claim_output_dir(out):
        refused(train(data_dir, out, cwd=tmp_path), "is in use by another run")


def test_an_output_folder_holding_a_finished_run(data_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")
    refused(train(data_dir, out, cwd=tmp_path), "holds a finished run")


def test_a_data_dir_without_domain_folders(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "cat.jpg").write_bytes(b"")
    refused(train(tmp_path / "flat", tmp_path / "out", cwd=tmp_path), "has no domain folders")


def test_a_pretrained_file_that_is_not_there(data_dir, tmp_path):
    refused(train(data_dir, tmp_path / "out", "--pretrained", tmp_path / "missing.pt", cwd=tmp_path), "missing.pt")

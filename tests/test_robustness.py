"""Files and images that are not what they should be: checkpoints read as data, one writer per output
directory, atomic writes, strict JSON, high-bit-depth and unreadable images."""
import contextlib
import json
import os
import pickle
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from clipood_plugin.data import ImageList, UnreadableImage, scan_domain_folders
from clipood_plugin.files import claim_output_dir, finite_or_none, load_checkpoint, save_atomic, write_json
from clipood_plugin.settings import DataError

from conftest import domainbed_root


class PlantedCode:
    """What a malicious checkpoint holds: unpickling it would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_checkpoint(path, marker):
    torch.save({"format": 1, "config": {}, "learner": PlantedCode(str(marker)), "state": {}, "data": {}}, path)


def test_a_checkpoint_that_would_run_code_is_refused_unread(tmp_path):
    marker = tmp_path / "code-ran"
    plant_checkpoint(tmp_path / "checkpoint.pt", marker)
    with open(tmp_path / "plain.pkl", "wb") as f:  # a plain pickle, not a torch zip file
        pickle.dump(PlantedCode(str(marker)), f)
    for name in ("checkpoint.pt", "plain.pkl"):
        with pytest.raises(DataError, match=name):
            load_checkpoint(tmp_path / name)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "random bytes"])
def test_a_damaged_checkpoint_is_one_clear_error(tmp_path, damage):
    path = tmp_path / "checkpoint.pt"
    torch.save({"weights": torch.arange(1000.0), "step": 3}, path)
    content = path.read_bytes()
    path.write_bytes({"truncated": content[:len(content) // 2], "empty": b"",
                      "random bytes": np.random.default_rng(0).bytes(len(content))}[damage])
    with pytest.raises(DataError, match="not a readable checkpoint") as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_numpy_numbers_load_only_when_allowed(tmp_path):
    path = tmp_path / "model.pkl"
    torch.save({"hparams": {"lr": np.float64(1e-5), "batch_size": np.int64(12)}}, path)
    with pytest.raises(DataError, match="numpy"):
        load_checkpoint(path)
    hparams = load_checkpoint(path, numpy_scalars=True)["hparams"]
    assert hparams == {"lr": 1e-5, "batch_size": 12} and type(hparams["lr"]) is np.float64


@pytest.mark.needs("domainbed")
def test_a_domainbed_model_pkl_with_random_hparams_loads_as_data(tmp_path):
    """DomainBed's own train.py saves numpy floats among random hparams (--hparams_seed > 0)."""
    from domainbed_adapter import load_algorithm

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [domainbed_root(), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-m", "domainbed.scripts.train", "--dataset", "Debug28", "--algorithm", "CLIPood",
                    "--steps", "1", "--hparams_seed", "1", "--output_dir", str(tmp_path)], cwd=domainbed_root(),
                   env=env, check=True, capture_output=True, timeout=600)
    with pytest.raises(DataError):  # numpy values: refused by plain weights_only loading
        load_checkpoint(tmp_path / "model.pkl")
    algorithm, saved = load_algorithm(tmp_path / "model.pkl")
    assert any(isinstance(v, np.floating) for v in saved["model_hparams"].values())
    assert algorithm.learner.step == 1


@contextlib.contextmanager
def held_by_another_process(directory):
    """``directory`` claimed by another process, which is then killed (no clean-up of its own: the kernel
    drops its lock); yields its pid."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from clipood_plugin.files import claim_output_dir\n"
                               "with claim_output_dir(sys.argv[1]):\n"
                               "    print('held', flush=True)\n"
                               "    time.sleep(120)\n", str(directory)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.needs("domainbed")
def test_evaluate_open_reads_every_model_pkl_as_data_and_goes_on_past_a_bad_one(tmp_path, capsys):
    from domainbed_adapter.evaluate_open import main

    marker = tmp_path / "code-ran"
    for run, content in (("planted", None), ("empty", b"")):
        (tmp_path / run).mkdir()
        if content is None:
            torch.save({"args": {}, "model_hparams": PlantedCode(str(marker)), "model_dict": {}},
                       tmp_path / run / "model.pkl")
        else:
            (tmp_path / run / "model.pkl").write_bytes(content)
    assert main(["--input_dir", str(tmp_path)]) == 2
    assert not marker.exists()
    err = capsys.readouterr().err
    assert f"{tmp_path / 'planted' / 'model.pkl'} is not a checkpoint of tensors" in err
    assert f"{tmp_path / 'empty' / 'model.pkl'} is not a readable checkpoint" in err


def test_offline_weights_are_named_in_domainbeds_terms(tmp_path, monkeypatch):
    import huggingface_hub
    from test_domainbed_contract import build

    from clipood_plugin import WeightsUnavailableError

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(WeightsUnavailableError) as caught:
        build(clip_model="ViT-B-16", clip_pretrained="openai")
    assert """--hparams '{"clip_pretrained": "/path/to/ViT-B-16-quickgelu.bin"}') with the model named 'ViT-B-16-quickgelu'""" in str(caught.value)
    assert '{"clip_model": "clipood-tiny", "clip_pretrained": null}' in str(caught.value)


def test_the_output_dir_has_one_writer_and_a_dead_holder_leaves_no_lock(tmp_path):
    out = tmp_path / "run"
    with held_by_another_process(out) as pid:
        with pytest.raises(DataError, match=f"pid {pid} on {socket.gethostname()}"):
            with claim_output_dir(out):
                pass
    assert (out / "clipood.lock").exists()  # the stale file of the killed holder
    with claim_output_dir(out):
        with pytest.raises(DataError, match=f"pid {os.getpid()}"):
            with claim_output_dir(out):
                pass
    assert not (out / "clipood.lock").exists()


def test_a_failed_run_leaves_no_directory_it_created(tmp_path):
    with pytest.raises(RuntimeError):
        with claim_output_dir(tmp_path / "new"):
            raise RuntimeError("the run failed")
    assert not (tmp_path / "new").exists()


def test_concurrent_writes_of_one_file_never_share_a_temporary_file(tmp_path):
    target = tmp_path / "checkpoint.pt"

    def outer(file):
        file.write(b"outer")
        save_atomic(lambda inner: inner.write(b"inner"), target)  # a second writer, in the middle of the first

    save_atomic(outer, target)
    assert target.read_bytes() == b"outer" and os.listdir(tmp_path) == ["checkpoint.pt"]


def test_json_outputs_are_strict(tmp_path):
    results = {"losses": [0.5, float("nan"), float("inf")], "accuracy": {"a": -float("inf"), "b": 1.0}}
    assert finite_or_none(results) == {"losses": [0.5, None, None], "accuracy": {"a": None, "b": 1.0}}
    write_json(results, tmp_path / "results.json")
    assert json.loads((tmp_path / "results.json").read_text(), parse_constant=pytest.fail) == finite_or_none(results)


TO_TENSOR = transforms.PILToTensor()


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_a_16_bit_image_is_scaled_to_8_bits(tmp_path, mode):
    levels = np.random.default_rng(0).integers(0, 256, (20, 30), dtype=np.uint16)
    image = Image.fromarray(levels * 257)  # 16-bit: v * 257 is 8-bit v at full scale
    assert image.mode == "I;16"
    if mode == "I;16B":
        image = Image.frombytes("I;16B", image.size, (levels * 257).astype(">u2").tobytes())
    path = tmp_path / "deep.png"
    image.save(path)
    pixels = ImageList([(str(path), 0)], TO_TENSOR)[0][0]
    assert torch.equal(pixels, torch.from_numpy(levels.astype(np.uint8)).expand(3, -1, -1))


def test_an_image_without_a_fixed_pixel_range_is_skipped_at_the_scan(tmp_path):
    for domain in ("a", "b"):
        (tmp_path / domain / "dog").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / domain / "dog" / "fine.png")
    Image.fromarray(np.ones((8, 8), dtype=np.float32)).save(tmp_path / "a" / "dog" / "float.tif")
    dataset = scan_domain_folders(tmp_path)
    [(path, reason)] = dataset.skipped
    assert path.endswith("float.tif") and "no fixed range" in reason


@pytest.fixture
def jpegs(tmp_path):
    """Three JPEGs; the middle one cut to 80% of its bytes (its header and most of its data survive)."""
    items = []
    for i in range(3):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
        items.append((str(path), i))
    data = open(items[1][0], "rb").read()
    open(items[1][0], "wb").write(data[:int(0.8 * len(data))])
    return items


def test_an_unreadable_image_raises_or_is_replaced_or_dropped(jpegs):
    with pytest.raises(UnreadableImage, match="1.jpg"):
        ImageList(jpegs, TO_TENSOR)[1]
    image, label, skipped = ImageList(jpegs, TO_TENSOR, unreadable="replace")[1]
    assert torch.equal(image, TO_TENSOR(Image.open(jpegs[2][0]))) and label == 2
    assert [path for path, _ in skipped] == [jpegs[1][0]]
    images, labels, skipped = ImageList.collate([ImageList(jpegs, TO_TENSOR, unreadable="drop")[i] for i in range(3)])
    assert images.shape[0] == 2 and labels.tolist() == [0, 2] and [p for p, _ in skipped] == [jpegs[1][0]]


def test_an_error_in_a_loader_process_is_one_line(jpegs):
    loader = torch.utils.data.DataLoader(ImageList(jpegs, TO_TENSOR), batch_size=3, num_workers=1,
                                         collate_fn=ImageList.collate)
    with pytest.raises(DataError) as caught:
        next(iter(loader))
    assert str(caught.value).startswith(f"cannot read image {jpegs[1][0]}") and "Traceback" not in str(caught.value)


@contextlib.contextmanager
def umask(mask):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_have_the_mode_the_umask_gives(tmp_path, mask, mode):
    """F-L19: mkstemp's 0600 made a run's results unreadable to a group that shares it."""
    with umask(mask):
        write_json({"accuracy": 1.0}, tmp_path / "results.json")
        save_atomic(lambda file: torch.save({"w": torch.zeros(2)}, file), tmp_path / "model.pt")
        save_atomic(lambda file: file.write(b"new"), tmp_path / "model.pt")  # replacing keeps to the umask too
    assert {path.name: path.stat().st_mode & 0o777 for path in tmp_path.iterdir()} == {
        "results.json": mode, "model.pt": mode}


def test_a_write_the_file_system_refuses_is_a_data_error_that_keeps_the_old_file(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(DataError, match=f"cannot write {tmp_path / 'folder'}: Is a directory"):
        (tmp_path / "folder").mkdir()
        write_json({}, tmp_path / "folder")
    with pytest.raises(DataError, match=f"cannot write {target}: No space left on device"):
        def torch_save_on_a_full_disk(file):  # what torch.save raises when the disk fills: ENOSPC, chained
            try:
                raise OSError(28, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")
        save_atomic(torch_save_on_a_full_disk, target)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["folder", "results.json"]
    with pytest.raises(ValueError, match="not a file system error"):  # other errors pass through unchanged
        save_atomic(lambda file: (_ for _ in ()).throw(ValueError("not a file system error")), target)

"""`python -m clipood_plugin.synthetic`: the generated shapes dataset README's recipes train on."""
import subprocess
import sys

from PIL import Image

from clipood_plugin.synthetic import CLASSES, DOMAINS


def synthetic(*args, cwd):
    return subprocess.run([sys.executable, "-m", "clipood_plugin.synthetic", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_writes_every_domain_and_class_as_a_folder_tree(tmp_path):
    done = synthetic("shapes", "--images-per-class", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    files = sorted(path.relative_to(tmp_path / "shapes").as_posix() for path in (tmp_path / "shapes").rglob("*.png"))
    assert files == sorted(f"{domain}/{name}/{i:04d}.png" for domain in DOMAINS for name in CLASSES for i in range(3))
    assert Image.open(tmp_path / "shapes" / files[0]).size == (64, 64)


def test_other_domain_names_and_the_same_seed_give_the_same_images(tmp_path):
    for out in ("a", "b"):
        assert synthetic(out, "--images-per-class", "2", "--domains", "images", "--seed", "3", cwd=tmp_path).returncode == 0
    first, second = (sorted((tmp_path / out).rglob("*.png")) for out in ("a", "b"))
    assert [path.relative_to(tmp_path / "a") for path in first] == [path.relative_to(tmp_path / "b") for path in second]
    assert {path.parts[-3] for path in first} == {"images"} and len(first) == 2 * len(CLASSES)
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second))


def test_no_images_is_a_usage_error(tmp_path):
    done = synthetic("shapes", "--images-per-class", "0", cwd=tmp_path)
    assert done.returncode == 2 and "--images-per-class must be at least 1" in done.stderr
    assert not (tmp_path / "shapes").exists()


def test_tiny_weights_are_the_tiny_models_seeded_init_as_open_clip_loads_it(tmp_path):
    """README's WiSE-FT and export recipes train from this file: it must be a state dict open_clip loads as
    clipood-tiny, the same for the same seed, another for another seed."""
    import open_clip
    import torch

    from clipood_plugin.backbone import resolve_model_name

    assert synthetic("tiny-weights", "tiny.pt", cwd=tmp_path).returncode == 0
    saved = torch.load(tmp_path / "tiny.pt", weights_only=True)
    torch.manual_seed(0)  # built independently: open_clip's own constructor under the same seed
    expected = open_clip.create_model(resolve_model_name("clipood-tiny")).state_dict()
    assert saved.keys() == expected.keys() and all(torch.equal(saved[k], expected[k]) for k in expected)
    model = open_clip.create_model(resolve_model_name("clipood-tiny"), pretrained=str(tmp_path / "tiny.pt"))
    assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected)
    assert synthetic("tiny-weights", "other.pt", "--seed", "1", cwd=tmp_path).returncode == 0
    other = torch.load(tmp_path / "other.pt", weights_only=True)
    assert not torch.equal(other["visual.conv1.weight"], saved["visual.conv1.weight"])


def test_tiny_weights_keep_the_same_file_and_refuse_to_overwrite_another(tmp_path):
    assert synthetic("tiny-weights", "tiny.pt", cwd=tmp_path).returncode == 0
    before = (tmp_path / "tiny.pt").read_bytes()
    again = synthetic("tiny-weights", "tiny.pt", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.startswith("kept tiny.pt")
    other_seed = synthetic("tiny-weights", "tiny.pt", "--seed", "2", cwd=tmp_path)
    (tmp_path / "notes.pt").write_text("my notes")
    foreign = synthetic("tiny-weights", "notes.pt", cwd=tmp_path)
    for done in (other_seed, foreign):
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "remove it or choose another FILE" in done.stderr
    assert (tmp_path / "tiny.pt").read_bytes() == before and (tmp_path / "notes.pt").read_text() == "my notes"

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

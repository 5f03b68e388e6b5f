"""README's smoke recipes, run as written, so that README cannot drift from the code.

A recipe is a fenced ``bash`` or ``python`` block right after a marker comment, which GitHub does not render::

    <!-- smoke: NAME needs=domainbed,wilds -->

``needs`` (optional) names what the recipe needs, as the ``needs`` marker of tests/conftest.py does (so under
CLIPOOD_REQUIRE_FRAMEWORKS=1, as in CI, a recipe cannot pass by skipping).
Each recipe runs in its own empty folder, offline, with the environment CI has (PYTHONPATH with DomainBed,
COOP_ROOT, Dassl installed) plus the variables README's install section defines: CLIPOOD (this clone) and
DASSL_ROOT (the Dassl clone). A bash recipe runs with ``set -euo pipefail``: any failing line fails the test.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REQUIREMENTS, dassl_root, domainbed_root

PROJECT = Path(__file__).resolve().parents[1]
README = PROJECT / "README.md"
MARKER = re.compile(r"<!-- smoke: (?P<name>[\w-]+)(?: needs=(?P<needs>[\w,-]+))? -->")
RECIPE = re.compile(MARKER.pattern + r"\n```(?P<language>bash|python)\n(?P<code>.*?)\n```", re.S)
FRONT_ENDS = {"library", "train", "domainbed", "dassl", "coop-base2new"}  # one recipe each at least


def recipes(text):
    return [match.groupdict() for match in RECIPE.finditer(text)]


def as_param(recipe):
    needs = [name for name in (recipe["needs"] or "").split(",") if name]
    return pytest.param(recipe, id=recipe["name"], marks=[pytest.mark.needs(*needs)] if needs else [])


README_RECIPES = recipes(README.read_text(encoding="utf-8"))


def test_readme_has_a_recipe_per_front_end_and_every_marker_is_on_a_recipe():
    text = README.read_text(encoding="utf-8")
    names = [recipe["name"] for recipe in README_RECIPES]
    assert FRONT_ENDS <= set(names), f"README has no recipe for {sorted(FRONT_ENDS - set(names))}"
    assert len(names) == len(set(names)), "two recipes share a name"
    assert len(MARKER.findall(text)) == len(names), "a smoke marker is not followed by a ```bash or ```python block"
    for recipe in README_RECIPES:
        unknown = set((recipe["needs"] or "").split(",")) - set(REQUIREMENTS) - {""}
        assert not unknown, f"recipe {recipe['name']} needs {unknown}: use names of {sorted(REQUIREMENTS)}"


def recipe_environment():
    """The caller's environment (CI's: PYTHONPATH, COOP_ROOT) with this interpreter first on PATH, DomainBed on
    PYTHONPATH, and README's variables."""
    environment = {**os.environ, "CLIPOOD": str(PROJECT),
                   "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}
    domainbed, dassl = domainbed_root(), dassl_root()
    if domainbed:
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [domainbed, os.environ.get("PYTHONPATH")]))
    if dassl:
        environment["DASSL_ROOT"] = str(dassl)
    return environment


@pytest.mark.parametrize("recipe", [as_param(recipe) for recipe in README_RECIPES])
def test_recipe_runs_as_written(recipe, tmp_path):
    script = tmp_path / ("recipe.sh" if recipe["language"] == "bash" else "recipe.py")
    script.write_text(recipe["code"] + "\n")
    command = ["bash", "-euo", "pipefail", script.name] if recipe["language"] == "bash" else [sys.executable, script.name]
    done = subprocess.run(command, cwd=tmp_path, env=recipe_environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (f"README recipe {recipe['name']!r} failed (exit {done.returncode}):\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


QUICK_START = re.compile(r"^## Quick start\n(?P<body>.*?)\n## ", re.S | re.M)
CLONE = re.compile(r"git clone <[^>]+> (?P<folder>\S+) && cd (?P=folder)")


def quick_start():
    """(the Quick start's text, the lines of its one bash block)."""
    body = QUICK_START.search(README.read_text(encoding="utf-8"))["body"]
    blocks = re.findall(r"```bash\n(.*?)\n```", body, re.S)
    assert len(blocks) == 1, "the Quick start is one bash block: the clone, then the two lines"
    return body, blocks[0].splitlines()


def test_quick_start_clones_enters_the_clone_then_installs_demos_and_tests():
    """Round 3: in an empty folder `pip install .` found no setup.py: README never said to clone and cd."""
    body, lines = quick_start()
    assert len(lines) == 3 and CLONE.fullmatch(lines[0]), lines
    assert lines[1:] == ["pip install . && clipood demo", 'pip install ".[test]" && python -m pytest -q tests']
    assert re.search(r"`clipood demo --steps \d+`", body), "the short form for a slow machine"
    readme = README.read_text(encoding="utf-8")
    assert readme.index("## Quick start") < readme.index("Margin Metric Softmax") < readme.index("| family")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_quick_start_runs_from_an_empty_folder(tmp_path):
    """The clone line with this repository as its URL, run in an empty folder; in the clone, pip finds the
    package (a dry run: the tests' environment already has it installed) and the demo runs in README's short
    form."""
    _, lines = quick_start()
    clone = lines[0].split(" && ")[0]
    folder = CLONE.fullmatch(lines[0])["folder"]
    subprocess.run(re.sub(r"<[^>]+>", str(PROJECT), clone).split(), cwd=tmp_path, check=True, capture_output=True,
                   timeout=120)
    steps = re.search(r"`clipood demo --steps (\d+)`", quick_start()[0])[1]
    script = ("pip install --dry-run --no-deps --no-index --no-build-isolation -q . && "
              f"clipood demo --steps {steps} --workers 0 && ls clipood_output/results.json clipood_output/model.pt")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path / folder, env=recipe_environment(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

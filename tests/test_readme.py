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

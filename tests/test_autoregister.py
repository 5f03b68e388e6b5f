"""The .pth post-import hook: installed by pip, off with CLIPOOD_NO_AUTOREGISTER=1, fires after import."""
import os
import subprocess
import sys

import clipood_autoregister

HOOK_ACTIVE = ("import sys; print(any(type(f).__name__ == '_RegisterAfterImport' for f in sys.meta_path))")


def _hook_active(**env):
    out = subprocess.run([sys.executable, "-c", HOOK_ACTIVE], env={**os.environ, **env}, capture_output=True,
                         text=True, check=True, cwd="/")
    return out.stdout.strip() == "True"


def test_pth_installs_the_hook_at_startup_and_the_switch_turns_it_off():
    assert _hook_active(CLIPOOD_NO_AUTOREGISTER="")
    assert not _hook_active(CLIPOOD_NO_AUTOREGISTER="1")


def test_adapter_is_called_after_the_watched_module_is_imported(tmp_path, monkeypatch):
    (tmp_path / "framework_under_test").mkdir()
    (tmp_path / "framework_under_test" / "__init__.py").write_text("")
    (tmp_path / "framework_under_test" / "registry.py").write_text("NAMES = ['ERM']\n")
    (tmp_path / "adapter_under_test.py").write_text(
        "import sys\n"
        "def register_loaded():\n"
        "    sys.modules['framework_under_test.registry'].NAMES.append('CLIPood')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(clipood_autoregister.WATCHED, "framework_under_test.registry", "adapter_under_test")
    monkeypatch.delenv("CLIPOOD_NO_AUTOREGISTER", raising=False)
    clipood_autoregister.install()
    import framework_under_test.registry as registry
    assert registry.NAMES == ["ERM", "CLIPood"]


def test_a_failing_adapter_warns_instead_of_breaking_the_framework(tmp_path, monkeypatch, recwarn):
    (tmp_path / "framework_with_broken_plugin.py").write_text("VALUE = 1\n")
    (tmp_path / "broken_adapter_under_test.py").write_text("def register_loaded():\n    raise KeyError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(clipood_autoregister.WATCHED, "framework_with_broken_plugin", "broken_adapter_under_test")
    monkeypatch.delenv("CLIPOOD_NO_AUTOREGISTER", raising=False)
    clipood_autoregister.install()
    import framework_with_broken_plugin
    assert framework_with_broken_plugin.VALUE == 1
    assert any("could not register" in str(w.message) and "boom" in str(w.message) for w in recwarn)

"""Post-import hook, loaded at interpreter start by ``clipood_autoregister.pth``.

When DomainBed or Dassl modules finish importing, it calls the matching adapter's
``register_loaded()``, which patches the already-imported framework modules (idempotent). A failure
there is a warning: the framework itself keeps working.
The core package is never involved. Costs one dict lookup per import; CLIPOOD_NO_AUTOREGISTER=1
turns it off.
"""
import importlib
import importlib.abc
import os
import sys
import warnings

# framework module -> adapter package whose register_loaded() patches it
WATCHED = {
    "domainbed.algorithms": "domainbed_adapter",
    "domainbed.hparams_registry": "domainbed_adapter",
    "domainbed.command_launchers": "domainbed_adapter",
    "domainbed.datasets": "domainbed_adapter",
    "dassl.config": "dassl_trainers",
    "dassl.engine": "dassl_trainers",
}


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        adapter = WATCHED.get(fullname)
        if adapter is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, adapter)
                return spec
        return None


class _Loader(importlib.abc.Loader):
    def __init__(self, loader, adapter):
        self.loader = loader
        self.adapter = adapter

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        try:
            importlib.import_module(self.adapter).register_loaded()
        except Exception as error:  # a broken plugin must not break the framework's own imports
            warnings.warn(f"CLIPood could not register into {module.__name__} ({type(error).__name__}: {error}); "
                          f"{self.adapter}.register() shows the whole error, CLIPOOD_NO_AUTOREGISTER=1 turns "
                          "this hook off", stacklevel=2)

    def __getattr__(self, name):  # get_code, get_source, ... for tools that ask the loader
        return getattr(self.loader, name)


def install():
    if os.environ.get("CLIPOOD_NO_AUTOREGISTER", "") not in ("", "0"):
        return
    if not any(isinstance(finder, _RegisterAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())

"""What the installed packages cannot do, as one line naming the fix: a package a model needs that is missing,
and a torchvision built for another torch than the one installed (open_clip's import is where it shows)."""
import re
from importlib import metadata

PYTORCH_INDEX = "https://download.pytorch.org/whl/"


class MissingPackageError(ImportError):
    """The model needs a package that is not installed, or one that does not work; the message names it (one
    line)."""


def import_open_clip():
    """``import open_clip``, the first import of torchvision: a torchvision that does not match torch (a CUDA
    build beside a CPU torch: "operator torchvision::nms does not exist") is a MissingPackageError naming the
    pair and the reinstall that fixes it."""
    try:
        import open_clip
    except RuntimeError as error:
        import torch

        raise MissingPackageError(torch_pair_mismatch(torch.__version__, _installed("torchvision"), error)) from None
    return open_clip


def torch_pair_mismatch(torch_version, torchvision_version, error):
    """The one line for a torchvision (``torchvision_version``) that fails to import (``error``) beside
    ``torch_version``: torch 2.M.P pairs with torchvision 0.(M+15).P, both from the index of torch's build."""
    release, _, build = str(torch_version).partition("+")
    parts = release.split(".")
    matching = f"0.{int(parts[1]) + 15}.{parts[2]}" if len(parts) >= 3 and parts[0] == "2" and parts[1].isdigit() \
        else "<the release made for it>"
    index = f" --index-url {PYTORCH_INDEX}{build}" if re.fullmatch(r"cpu|cu\d+|rocm[\d.]+", build) else ""
    detail = (str(error).strip().splitlines() or [type(error).__name__])[-1]
    return (f"torch {torch_version} and torchvision {torchvision_version} do not match (importing torchvision: "
            f"{detail}): reinstall them together, e.g. pip install --force-reinstall torch=={release} "
            f"torchvision=={matching}{index}")


def _installed(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"

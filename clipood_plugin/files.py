"""Run files on disk: checkpoints read as data (never as code), writes that are atomic and never share a
temporary file, strict JSON, and one writer per output directory. torch is imported on use only."""
import contextlib
import errno
import json
import math
import os
import re
import socket
import tempfile
import time
import warnings
from pathlib import Path

from .settings import DataError

LOCK_FILE = "clipood.lock"
_TEMPORARY = ".*.tmp"  # what atomic writes name their temporary files: .<name>.<random>.tmp

# The descriptors of the output-dir locks this process holds. A forked child (a DataLoader process) gets
# copies of them, and an flock lasts while any copy is open: a child that outlives a killed run would hold
# the lock. So every forked child closes its copies at once (close-on-exec covers children that exec).
_HELD_LOCKS = set()


def _drop_inherited_locks():
    for handle in _HELD_LOCKS:
        with contextlib.suppress(OSError):
            os.close(handle)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


REPLACE_FILE = "delete it, or replace it with a file this program wrote"


def load_checkpoint(path, numpy_scalars=False, fix=REPLACE_FILE):
    """The contents of a torch checkpoint file, read as data: tensors and plain Python values only
    (``torch.load(weights_only=True)``), so that nothing in the file can run. ``numpy_scalars`` also
    accepts numpy numbers (DomainBed's random hparams are numpy floats). A file that cannot be read so
    (truncated, empty, not a torch file, or holding other Python objects) raises DataError naming it and
    ``fix``: the default suits a file the program itself keeps (a run's checkpoint); a command that only
    reads the file (export) must not advise deleting it."""
    import torch

    scope = torch.serialization.safe_globals(_numpy_scalar_types()) if numpy_scalars else contextlib.nullcontext()
    try:
        with scope, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols of files it then refuses anyway
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"no checkpoint at {path}") from None
    except Exception as error:  # torch raises many types for damaged files
        refused = re.search(r"GLOBAL (\S+)", str(error))
        if refused:
            raise DataError(f"{path} is not a checkpoint of tensors and plain values: it asks to load the Python "
                            f"object {refused.group(1)}, so it was not loaded (loading it could run code); "
                            f"{fix}") from None
        raise unreadable_checkpoint(path, fix) from None


def unreadable_checkpoint(path, fix):
    """The DataError for a file torch cannot read (truncated, empty, not a torch file), naming ``fix``."""
    return DataError(f"{path} is not a readable checkpoint: it is truncated, empty or not a file torch wrote; {fix}")


def _numpy_scalar_types():
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    numbers = "?" + np.typecodes["AllInteger"] + np.typecodes["AllFloat"]
    return [scalar, np.dtype, *{type(np.dtype(code)) for code in numbers}]  # numpy 2 pickles the dtype's class


def save_atomic(write, path):
    """Write ``path`` through ``write(file)`` into a temporary file of its own, then rename it over ``path``:
    a reader sees the old file or the new one, never a part, and concurrent writes never share a file.
    The file gets the mode a plain ``open`` would give it (0666 less the umask), not mkstemp's 0600, so
    that a group sharing a run can read it. A write the file system refuses (no permission, no space,
    ``path`` a folder) raises DataError naming ``path``, and leaves the old file and no temporary behind."""
    path = Path(path)
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fchmod(file.fileno(), 0o666 & ~_umask())
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        refused = _os_error_in(error)
        if refused is None:
            raise
        raise DataError(f"cannot write {path}: {_reason(refused)}") from None


def _umask():
    mask = os.umask(0o022)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def _os_error_in(error):
    """The OSError that ``error`` is or was raised from (torch.save reports a failed write as a RuntimeError
    raised while handling it)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _reason(error):
    """One line: what the file system said, and what to do about it."""
    fixes = {errno.ENOSPC: "free space there or write elsewhere", errno.EDQUOT: "free space there or write elsewhere",
             errno.EFBIG: "write to a file system that takes larger files",
             errno.EACCES: "choose a folder you can write to", errno.EPERM: "choose a folder you can write to",
             errno.EROFS: "choose a folder on a writable file system",
             errno.EISDIR: "it is a folder: name a file instead", errno.ENOTDIR: "a part of its path is not a folder",
             errno.ENOENT: "its folder does not exist"}
    reason = error.strerror or str(error)
    return f"{reason} ({fixes[error.errno]})" if error.errno in fixes else reason


def make_dirs(directory):
    """``directory`` and its parents, created if missing; a file system that refuses raises DataError."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create the folder {directory}: {_reason(error)}") from None


def save_tensors(obj, path):
    """torch.save, atomically."""
    import torch

    save_atomic(lambda file: torch.save(obj, file), path)


def write_json(obj, path):
    """Strict JSON (no NaN or Infinity: a non-finite number is written as null), atomically."""
    text = json.dumps(finite_or_none(obj), indent=2, allow_nan=False)
    save_atomic(lambda file: file.write(text.encode()), path)


def finite_or_none(obj):
    """``obj`` with every non-finite float replaced by None, for strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite_or_none(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(value) for value in obj]
    return obj


@contextlib.contextmanager
def claim_output_dir(directory):
    """Hold ``directory`` (created if missing) for one run: a second claim, from any process on any host
    that shares the file system, raises DataError naming the holder. The claim is an flock on
    ``directory/clipood.lock``, which the kernel releases when its process ends however it ends, so a
    run killed outright leaves no lock behind (the processes it forked do not keep it). Temporary files of writes that a killed run left are
    removed. A directory created here and left empty by a failed run is removed again."""
    import fcntl

    directory = Path(directory)
    created = not directory.exists()
    make_dirs(directory)
    path = directory / LOCK_FILE
    while True:
        try:
            handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            if created:
                with contextlib.suppress(OSError):
                    directory.rmdir()
            raise DataError(f"cannot write in {directory}: {_reason(error)}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(handle, 200).decode(errors="replace").strip() or "a process that is starting"
            os.close(handle)
            raise DataError(f"{directory} is in use by another run ({holder}); wait for it to end, or choose "
                            "another --output-dir") from None
        except OSError as error:  # a file system without locks
            warnings.warn(f"cannot lock {path} ({error}): make sure no other run writes to {directory}")
            break
        try:
            same = os.stat(path).st_ino == os.fstat(handle).st_ino
        except FileNotFoundError:  # its holder ended and removed it between our open and our lock
            same = False
        if same:
            break
        os.close(handle)
    os.ftruncate(handle, 0)
    os.write(handle, f"pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
    for leftover in directory.glob(_TEMPORARY):
        leftover.unlink(missing_ok=True)
    _HELD_LOCKS.add(handle)
    try:
        yield directory
    finally:
        path.unlink(missing_ok=True)
        _HELD_LOCKS.discard(handle)
        os.close(handle)
        if created:
            with contextlib.suppress(OSError):  # not empty: the run wrote something
                directory.rmdir()

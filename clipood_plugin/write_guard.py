"""The one write guard of every command that writes a file (train, evaluate, export, the summaries, figure5):
it never replaces a file it reads, a file of a `clipood train` run, or a file it did not write unless asked
(``--overwrite``). Whether a command wrote a file is told by the file's content (a JSON key naming its
writer, an export's JSON, a summary's legend). Imports no torch: the summaries and figure5 run without it."""
import json
import os
from pathlib import Path

from .files import LOCK_FILE
from .settings import DataError

# the files `clipood train` keeps in its --output-dir, in this order (run_files.RunFiles names them so)
RUN_FILES = ("results.json", "model.pt", "checkpoint.pt", "results.png")
# the key that names the command in the JSON it writes (`clipood evaluate --output`)
WRITER_KEY = "written_by"
_LARGEST_OWN_FILE = 64 * 2 ** 20  # a text file this package writes is far smaller: a larger one is not one


def check_writes(outputs, command, name, reads=(), task=None, overwrite=False, written_here=None):
    """Raise DataError (one line naming the fix) unless ``command`` may write each path of ``outputs`` ({path:
    what it is, e.g. "--output"}), given as ``name`` (the argument the fix tells to change):

    - none is one of the files it reads (``reads``; ``task`` says what reads them, e.g. "the export (the
      checkpoint or the pretrained weights)"), nor a folder;
    - an existing one is replaced if ``written_here(path)`` recognizes it as this command's output;
    - else none is a file of a `clipood train` run (``is_run_file``), and an existing one is replaced only with
      ``overwrite`` (None: the command has no --overwrite)."""
    _check_targets(outputs, name, reads, task or command)
    existing = []
    for path in map(Path, outputs):
        if written_here is not None and path.is_file() and written_here(path):
            continue
        if is_run_file(path):  # refused even with overwrite: the run's results are not replaced by another's
            found = f" exists and was not written by {command}: it" if path.exists() else ""
            raise DataError(f"{path}{found} is a file of the `clipood train` run in {path.parent}; name {name} "
                            "elsewhere")
        if path.exists():
            existing.append(str(path))
    if existing and not overwrite:
        raise DataError(f"{' and '.join(existing)} exist{'s' if len(existing) == 1 else ''} and "
                        f"{'was' if len(existing) == 1 else 'were'} not written by {command}: name {name} elsewhere"
                        + (", or move them away" if overwrite is None else ", or pass --overwrite to replace them"))


def _check_targets(outputs, name, reads, task):
    """None of ``outputs`` ({path: what it is}) is one of the files ``task`` reads, nor a folder."""
    inputs = [Path(path) for path in reads if path is not None]
    for path, label in outputs.items():
        path = Path(path)
        if any(_same_file(path, read) for read in inputs):
            raise DataError(f"{label}, {path}, is an input of {task}: name {name} elsewhere")
        if path.is_dir():
            raise DataError(f"{label}, {path}, is a folder: name {name} as a file")


def _same_file(path, other):
    """One file under two names: the same path resolved (links followed), or the same inode (a hard link)."""
    if path.resolve() == other.resolve():
        return True
    try:
        return os.path.samefile(path, other)
    except OSError:  # one of them is not there
        return False


def is_run_file(path):
    """Whether ``path`` is one of a `clipood train` run's files: a RUN_FILES name in a folder that holds a run (one
    of those files, or the lock of a run that is starting)."""
    path = Path(path)
    return path.name in RUN_FILES and any((path.parent / file).exists() for file in (*RUN_FILES, LOCK_FILE))


def check_run_outputs(output_dir, pretrained):
    """`clipood train`'s guard, before a run writes or clears its files in ``output_dir``: none of them is the
    pretrained weights it reads (its --resume / --overwrite decide over the run's own files)."""
    _check_targets({Path(output_dir) / file: "the run file" for file in RUN_FILES}, "--output-dir",
                   reads=[pretrained], task="the run (its --pretrained weights)")


def with_writer(obj, command):
    """``obj`` (a dict written as JSON) marked as written by ``command``."""
    return {WRITER_KEY: command, **obj}


def json_written_by(path, command):
    """Whether ``path`` is a JSON file that ``with_writer`` marked as ``command``'s."""
    try:
        content = json.loads(_own_sized_text(path))
    except ValueError:  # not JSON
        return False
    return isinstance(content, dict) and content.get(WRITER_KEY) == command


def text_holds(path, text):
    """Whether the text file ``path`` holds ``text`` (how a command recognizes a text file it wrote)."""
    return text in _own_sized_text(path)


def text_starts_with(path, text):
    """Whether the text file ``path`` begins with ``text`` (a header a command writes first)."""
    return _own_sized_text(path).startswith(text)


def _own_sized_text(path):
    """The text of ``path`` if it is a UTF-8 file no larger than one this package writes, else ""."""
    try:
        if Path(path).stat().st_size > _LARGEST_OWN_FILE:
            return ""
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""

"""Commands run where the file system refuses, for real: files and folders without permission (also for
root, whose permission overrides are dropped for the command) and a full disk (a file-size limit: the write
fails with EFBIG as it would with ENOSPC, and the process is not killed by SIGXFSZ)."""
import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest


def _as_a_plain_user():
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be made to hold")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def command(argv, permissions_hold=False, file_size_limit=None, umask=None, timeout=300):
    """Run ``argv``; returns the CompletedProcess. ``permissions_hold``: file modes bind the command even
    when the tests run as root."""
    prefix = _as_a_plain_user() if permissions_hold else []

    def prepare():
        if file_size_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
        if umask is not None:
            os.umask(umask)
    return subprocess.run([*prefix, *map(str, argv)], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=prepare)


def clipood(*argv, **options):
    """`python -m clipood_plugin ARGV` in a process of its own."""
    return command([sys.executable, "-m", "clipood_plugin", *argv], **options)


def read_only_folder(path):
    """``path`` created without write permission for anyone."""
    path.mkdir()
    path.chmod(0o555)
    return path


def one_line_error(result, command):
    """The command failed with exit 2 and one error line (other lines on stderr are warnings), no traceback."""
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"clipood {command}: error: ")]
    return result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr

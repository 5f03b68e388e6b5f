"""SIGINT and SIGTERM during a run: they stop it between steps, never in the middle of one, so that the
state it saves is always that of a finished step."""
import contextlib
import signal
import threading

_END = object()  # what next() gives at the end of an iterator, in StopSignals.between


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped the run; ``kept`` says, in a sentence, what of it is on disk. ``forced``: a
    second signal came while the first was waiting for a block to end, and the run stopped at once."""

    def __init__(self, signum, forced=False):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.forced = signum, forced
        self.kept = None


class StopSignals:
    """While active, SIGINT and SIGTERM raise Interrupted at once, except inside ``deferred()`` (an optimizer
    step and its bookkeeping, a file write, the fetch of a batch): there they take effect when the block
    ends, so that the state a run saves is always that of a finished step. A second signal while the
    first one waits raises at once, with ``forced``."""

    def __init__(self):
        self._depth, self._pending, self._previous = 0, None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # Python runs signal handlers there only
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.getsignal(signum) or signal.SIG_DFL
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame):
        if self._depth and self._pending is None:
            self._pending = signum
        else:
            raise Interrupted(signum, forced=bool(self._depth))

    @contextlib.contextmanager
    def deferred(self):
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if not self._depth and self._pending is not None:
            signum, self._pending = self._pending, None
            raise Interrupted(signum)

    def between(self, iterable):
        """The items of ``iterable``, each fetched inside ``deferred()``: a signal takes effect between items,
        never in the middle of a DataLoader's receipt of a batch (which leaves its loader processes printing
        errors as the run exits)."""
        iterator = iter(iterable)
        while True:
            with self.deferred():
                item = next(iterator, _END)
            if item is _END:
                return
            yield item

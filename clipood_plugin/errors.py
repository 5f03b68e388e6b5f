"""The errors a user is told of in one line, not a traceback: bad input (exit 2 on the command line), and a run
that diverged or learned nothing. Needs no torch, so that a command can catch them before it imports torch."""


class DataError(Exception):
    """Bad input (data, files, settings), reported to the user as one line rather than a traceback."""

    def __init__(self, message=""):
        # a DataLoader re-raises a worker's error with the worker's whole traceback as its message
        if message.startswith(f"Caught {type(self).__name__}"):
            message = message.rstrip().rsplit(f"{type(self).__name__}: ", 1)[-1]
        super().__init__(message)


class SettingError(DataError, ValueError):
    """A setting outside its allowed values (a ValueError too, as the library raises for bad arguments)."""


class ChangedSettingsError(SettingError):
    """A checkpoint made with other settings than the run that loads it. ``changes``: [(core name, the
    checkpoint's value, this run's value)]; ``respelled`` words it for a front end."""

    def __init__(self, changes, advice, spelled=None):
        self.changes, self.advice = list(changes), advice
        label = spelled or (lambda name: name)
        listing = ", ".join(f"{label(name)} {saved!r} -> {now!r}" for name, saved, now in self.changes)
        super().__init__(f"the checkpoint was made with other settings than this run has (checkpoint -> now): "
                         f"{listing}; {advice}")

    def respelled(self, spelled, advice=None):
        return ChangedSettingsError(self.changes, advice or self.advice, spelled)


class TrainingDivergedError(RuntimeError):
    """Many consecutive steps had a non-finite loss or gradients: the run has diverged."""


class LearnedNothingError(TrainingDivergedError):
    """Every step so far, or more than training_step.MAX_SKIPPED_SHARE of a finished run's steps, had a non-finite
    loss or gradients and was skipped: the weights are (almost) the initial ones, and the run is no success."""

"""The logs of Dassl / CoOp runs, read through one checked reader: the accuracy a finished run reports,
None while it runs, or UnusableRun naming why the run cannot be used (an unreadable log, a malformed or
impossible accuracy, a training log where an eval-only run belongs)."""
import re
from pathlib import Path

from clipood_plugin.results_table import UnusableRun, checked_accuracy

ACCURACY = re.compile(r"^\* accuracy: (.*)%$")  # Dassl's Classification evaluator
END_OF_TRAINING = "Finish training"  # Dassl prints it before the final test
EVAL_ONLY = re.compile(r"\beval_only'?: True\b")  # CoOp's train.py and dassl_trainers.train print their arguments
TRAINING, EVALUATION = "training", "evaluation"  # the kinds of run a summary expects in a folder


def run_accuracy(run_dir, kind=TRAINING):
    """The accuracy (%) a finished run reports: the test after "Finish training" of a training run, the last
    ``* accuracy: X%`` of an eval-only run; None while it runs. The newest log (Dassl writes log.txt-<time>
    when a run is resumed) that has one counts. ``kind`` EVALUATION takes eval-only runs alone: a training
    log there (copied into the folder of the new-class evaluation) is refused, not read as one."""
    for log in sorted(Path(run_dir).glob("log.txt*"), reverse=True):
        try:
            text = log.read_text(errors="replace")
        except OSError as error:
            raise UnusableRun(f"{log} unreadable ({error.strerror})") from None
        lines = [line.strip() for line in text.splitlines()]
        if END_OF_TRAINING in lines:
            if kind == EVALUATION:
                raise UnusableRun(f"{log} is the log of a training run (it says {END_OF_TRAINING!r}), where an "
                                  "eval-only run belongs")
            lines = lines[len(lines) - lines[::-1].index(END_OF_TRAINING):]
        elif not EVAL_ONLY.search(text):
            continue
        accuracies = [match.group(1) for match in map(ACCURACY.match, lines) if match]
        if accuracies:
            try:
                value = float(accuracies[-1])
            except ValueError:
                raise UnusableRun(f"{log}: the accuracy line reads {accuracies[-1]!r}%, not a number") from None
            return checked_accuracy(value, f"{log}: the accuracy")
    return None

"""The authors' protocol as a DomainBed model-selection method: the final model of each run (the end of
training, where CLIPood's BMA is complete), scored on the test domain's ``out`` split (the 20% held out of
training, as the authors did) or its ``in`` split (the 80% DomainBed's own selection methods score).

``python -m domainbed_adapter.final_model_table --input_dir SWEEP [--split out|in] [--paper] [--out PREFIX]``
is ``python -m domainbed_adapter.summary --selection final``: the tables name the split they score.
"""
import sys

SPLITS = ("out", "in")


def final_model_selection(split):
    """A ``domainbed.model_selection.SelectionMethod`` that takes each run's last results.jsonl row and
    scores ``env{test_env}_{split}_acc``; among several hparams seeds it keeps the one whose last row has
    the best training-domain validation accuracy (DomainBed's own criterion)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    from domainbed import model_selection

    class FinalModelSelectionMethod(model_selection.SelectionMethod):
        name = f"final model (end of training), test domain {split} split"

        @classmethod
        def run_acc(cls, run_records):
            test_records = model_selection.get_test_records(run_records)
            if not len(test_records):
                return None
            last = test_records.sorted(lambda record: record["step"])[-1]
            test_env = last["args"]["test_envs"][0]
            return {"val_acc": model_selection.IIDAccuracySelectionMethod._step_acc(last)["val_acc"],
                    "test_acc": last[f"env{test_env}_{split}_acc"]}

    return FinalModelSelectionMethod


def main(argv=None):
    from .summary import main as summary_main
    return summary_main(["--selection", "final", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

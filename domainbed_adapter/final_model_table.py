"""``python -m domainbed_adapter.final_model_table --input_dir SWEEP [--split out|in] [--paper] [--out PREFIX]``
is ``python -m domainbed_adapter.summary --selection final``: the authors' protocol, the final model of each
run (the row at its last step, where CLIPood's BMA is complete) scored on the test domain's ``out`` split
(the 20% held out of training, as the authors did) or its ``in`` split (the 80% DomainBed's own selection
methods score). The tables name the split they score; the selection method is
``sweep_runs.final_model_selection``.
"""
import sys

from .summary import main as summary_main


def main(argv=None):
    return summary_main(["--selection", "final", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

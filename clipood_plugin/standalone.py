"""`clipood train` as a library call: CLIPood on a ROOT/<domain>/<class>/<image> folder dataset, leave-domains-out.
What can be refused without a model (the settings, the device, an output folder in use or holding a run, the
data layout) is, before torch and open_clip are imported; then the run loop (training_run.py) trains."""
import contextlib

from . import distributed
from .files import claim_output_dir
from .folders import scan_domain_folders
from .run_files import RunFiles
from .settings import DataError, check_device
from .stop_signals import Interrupted, StopSignals
from .train_config import TrainConfig


def train(config: TrainConfig, log=print, prepare_data=None):
    """Run (or resume) one training job; returns the results dict that is also written to results.json.

    The run holds OUTPUT_DIR for its whole life (a second run there stops at once with a DataError), and
    ``prepare_data(data_dir)``, when given, runs once it does, before the data is scanned (clipood demo
    writes its dataset into OUTPUT_DIR so). SIGINT or SIGTERM saves a checkpoint of the last finished
    step and raises Interrupted.

    Started by torchrun with several processes, it trains data-parallel: the inputs are checked on every
    rank before the process group forms (so a bad input stops them all alike), each rank reads its share
    of every batch and of every evaluation split, and rank 0 alone logs and writes files.
    """
    config.check()
    check_device(config.device)
    main = distributed.is_main()
    if not main:
        log = _quiet
    files = RunFiles(config.output_dir)
    with claim_output_dir(files.dir) if main else contextlib.nullcontext(), StopSignals() as signals:
        files.check_start(config)
        if prepare_data is not None:
            prepare_data(config.data_dir)
        dataset = scan_domain_folders(config.data_dir, config.allow_missing_classes)
        unknown = sorted(set(config.test_domains) - set(dataset.domains))
        if unknown:
            raise DataError(f"unknown test domain(s) {unknown}; the domains in {config.data_dir} are {dataset.domains}")
        train_domains = [d for d in dataset.domains if d not in config.test_domains]
        if not train_domains:
            raise DataError(f"all domains {dataset.domains} are test domains; leave at least one to train on")
        if dataset.skipped:
            log(f"skipped {len(dataset.skipped)} unreadable image(s), listed in results.json "
                f"(first: {dataset.skipped[0][0]})")
        from .training_run import TrainingRun  # torch and open_clip: only once the run's inputs are checked

        created_group = distributed.init_from_env(config.device)
        try:
            return TrainingRun(config, files, dataset, train_domains, signals, log).run()
        except Interrupted as stop:
            if stop.kept is None:
                stop.kept = (f"{files.checkpoint} is as it was; continue with the same command and --resume"
                             if files.checkpoint.exists() else "nothing had been trained yet, so nothing was saved")
            raise
        finally:
            if created_group:
                distributed.shutdown()


def _quiet(*args, **kwargs):
    pass

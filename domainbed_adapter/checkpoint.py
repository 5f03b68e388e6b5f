"""Rebuilding a CLIP algorithm from the model.pkl that DomainBed's train.py writes."""
from clipood_plugin.files import load_checkpoint
from clipood_plugin.settings import DataError

from .hparams import ALGORITHM_NAMES
from .registration import register

# where DomainBed's model.pkl keeps the learner state (entry point clipood.learner_states: the core reads it so)
LEARNER_STATE = ("DomainBed model.pkl", ("model_dict", "clipood_learner"))


def read_model_pkl(model_pkl):
    """The dict DomainBed's train.py saved in a model.pkl, read as data (tensors, plain values and the numpy
    numbers of random hparams; nothing in the file runs). Raises DataError naming a file that is not such."""
    saved = load_checkpoint(model_pkl, numpy_scalars=True)
    if not (isinstance(saved, dict) and {"args", "model_hparams", "model_dict"} <= set(saved)):
        raise DataError(f"{model_pkl} is not a model.pkl of DomainBed's train.py")
    return saved


def load_algorithm(model_pkl):
    """(algorithm, saved dict) from a model.pkl of CLIPood, CLIPERM or CLIPZeroShot."""
    saved = read_model_pkl(model_pkl)
    name = saved["args"]["algorithm"]
    if name not in ALGORITHM_NAMES:
        raise ValueError(f"{model_pkl} holds a {name} model, not one of {ALGORITHM_NAMES}")
    register()
    from domainbed import algorithms

    learner_state = saved["model_dict"]["clipood_learner"]
    # the file carries the class names and the horizon: no dataset or train run is needed to rebuild
    hparams = {**saved["model_hparams"], "class_names": learner_state["class_names"],
               "steps": learner_state["config"]["total_steps"]}
    algorithm = algorithms.get_algorithm_class(name)(
        saved["model_input_shape"], saved["model_num_classes"], saved["model_num_domains"], hparams)
    algorithm.load_state_dict(saved["model_dict"])
    return algorithm, saved

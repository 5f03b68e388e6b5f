"""Rebuilding a CLIP algorithm from the model.pkl that DomainBed's train.py writes."""
import torch

from .hparams import ALGORITHM_NAMES
from .registration import register


def load_algorithm(model_pkl):
    """(algorithm, saved dict) from a model.pkl of CLIPood, CLIPERM or CLIPZeroShot.

    model.pkl is a pickle with DomainBed's args and hparams, so it is read with weights_only=False:
    load only files you trust, as with any DomainBed model.pkl.
    """
    saved = torch.load(model_pkl, map_location="cpu", weights_only=False)
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

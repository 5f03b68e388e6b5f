"""Any model this package saved, back as a CLIPoodLearner that predicts as it did: `clipood train`'s
model.pt and checkpoint.pt, DomainBed's model.pkl, a Dassl checkpoint, or a `clipood export` file (with
the JSON beside it). Files are read as data (torch.load(weights_only=True))."""
from pathlib import Path

from .backbone import EXPORT_MODEL_KEY, export_metadata, exported_model_name
from .checkpoint_format import inference_state, read_learner_state
from .learner import CLIPoodLearner
from .pretrained_check import check_run_weights
from .settings import DataError


def load_learner(path, device=None, pretrained=None):
    """The predictor saved in ``path``, on ``device`` (default: cuda when there, else cpu); its
    ``class_names`` are the ones it was trained on, and ``set_class_names`` changes them (the text tower
    comes from the pretrained weights the run started from: ``pretrained`` names them if they are not
    where the run recorded them, e.g. a local file of its tag; DataError if they do not give the run's text
    features, pretrained_check.check_run_weights).

    >>> learner = load_learner("clipood_output/model.pt")
    >>> logits = learner.predict(images)  # images: [B, 3, H, W], CLIP-normalized
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no model file at {path}")
    if exported_model_name(path) is not None:
        metadata = export_metadata(path)
        return CLIPoodLearner(model_name=metadata[EXPORT_MODEL_KEY], pretrained=str(path), zero_shot=True,
                              class_names=metadata["class_names"], templates=metadata["training"]["templates"],
                              device=device)
    state, _ = read_learner_state(path)
    config = dict(state["config"], compile="off")  # compile: of the training step, which a predictor never runs
    if pretrained is not None:
        config["pretrained"] = str(pretrained)
    learner = CLIPoodLearner(**config, class_names=state["class_names"], device=device)
    if pretrained is not None:
        check_run_weights(learner.prompt_encoder, state["class_names"], state["text_features"], pretrained)
    state = {**inference_state(state), "config": config}
    if "inference_encoder" not in state:  # DomainBed's zero-shot model.pkl: the pretrained encoder, not saved again
        state["inference_encoder"] = learner.inference_encoder.state_dict()
    learner.load_state_dict(state)
    return learner


"""clipood_plugin.checkpoint_format: the learner state is found in each front end's file layout (the adapters'
registered through entry points), the build-key comparison a front end needs keeps the learner's default for
checkpoints saved before image_norm was recorded, and the format's old import paths still work."""
import pytest
import torch

from clipood_plugin import CLIPoodLearner
from clipood_plugin.checkpoint_format import changed_build_settings, read_learner_state
from clipood_plugin.image_input import IMAGE_NORMS
from clipood_plugin.settings import DataError
from conftest import CLASSES


@pytest.fixture(scope="module")
def state(tiny_weights):
    learner = CLIPoodLearner(model_name="clipood-tiny", pretrained=str(tiny_weights), class_names=CLASSES,
                             total_steps=2, device="cpu")
    return learner.state_dict(include_training_state=False)


@pytest.mark.parametrize("source, layout", [
    ("clipood train model.pt", lambda state: state),
    ("clipood train checkpoint.pt", lambda state: {"format": 1, "learner": state, "state": {}}),
    ("DomainBed model.pkl", lambda state: {"args": {}, "model_dict": {"clipood_learner": state}}),
    ("Dassl checkpoint", lambda state: {"epoch": 1, "state_dict": {"learner": state, "rng": {}}}),
])
def test_the_learner_state_is_read_from_each_front_ends_layout(state, tmp_path, source, layout):
    torch.save(layout(state), tmp_path / "saved.pt")
    read, found = read_learner_state(tmp_path / "saved.pt")
    assert found == source and read["class_names"] == CLASSES and torch.equal(read["text_features"],
                                                                              state["text_features"])


def test_a_file_without_a_learner_names_what_is_read(tmp_path):
    torch.save({"model_dict": {"network.0.weight": torch.zeros(1)}}, tmp_path / "erm.pkl")
    with pytest.raises(DataError) as caught:
        read_learner_state(tmp_path / "erm.pkl")
    assert "holds no CLIPood learner" in str(caught.value) and "DomainBed model.pkl" in str(caught.value)
    assert "Dassl checkpoint" in str(caught.value) and "export takes" not in str(caught.value)


def test_changed_build_settings_keeps_the_default_of_checkpoints_without_image_norm():
    openai = IMAGE_NORMS["openai"].norm
    other = IMAGE_NORMS["imagenet"].norm
    now = {"model_name": "clipood-tiny", "pretrained": "w.pt", "image_norm": openai, "averaging": "bma",
           "zero_shot": False, "total_steps": 20, "head": "text", "lr": 1e-5}
    old = {key: value for key, value in now.items() if key != "image_norm"}  # saved before image_norm was recorded
    assert changed_build_settings(old, now) == []
    assert changed_build_settings(old, {**now, "image_norm": other}) == [("image_norm", openai, other)]
    assert changed_build_settings({**old, "total_steps": 10, "lr": 1.0}, now) == [("total_steps", 10, 20)]


def test_the_formats_names_keep_their_old_import_paths():
    from clipood_plugin import checkpoint_format
    from clipood_plugin.export import read_learner_state as from_export
    from clipood_plugin.learner import CHECKPOINT_FORMAT, check_tensors, inference_state

    assert CHECKPOINT_FORMAT == 2 and from_export is read_learner_state
    assert (check_tensors, inference_state) == (checkpoint_format.check_tensors, checkpoint_format.inference_state)

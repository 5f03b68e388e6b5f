"""The run state a `clipood train` checkpoint carries is the plain dict runs have always saved, to the byte."""
import pickle

from clipood_plugin.run_files import RunState


def test_the_saved_state_pickles_as_the_dict_runs_saved_before_it_was_typed():
    zero_shot = {"photo (holdout)": 20.0, "sketch": 25.0}
    step_2 = {"step": 2, "final": {"photo (holdout)": 40.0, "sketch": 25.0}, "bma": zero_shot}
    # as standalone.py wrote it by hand: the keys of a fresh run, "zero_shot" added once evaluated
    before = {"history": [], "bma_weights": [], "losses": [], "skipped_images": {}}
    before["zero_shot"] = zero_shot
    before["bma_weights"].append(0.0)
    before["history"].append({"step": 0, "final": zero_shot, "bma": zero_shot})
    before["skipped_images"]["a.png"] = "truncated"
    before["bma_weights"] += [0.5, 0.25]
    before["losses"] += [1.5, float("nan")]
    before["history"].append(step_2)

    state = RunState()
    state.record_zero_shot(zero_shot, 0.0)
    assert state.record_skipped([("a.png", "truncated"), ("a.png", "truncated")]) == [("a.png", "truncated")]
    state.record_step({"bma_weight": 0.5, "loss": 1.5})
    state.record_step({"bma_weight": 0.25, "loss": float("nan")})
    state.history.append(step_2)
    assert pickle.dumps(state.as_dict()) == pickle.dumps(before)
    assert state.first_nonfinite_loss_step() == 2

    assert pickle.dumps(RunState().as_dict()) == pickle.dumps(
        {"history": [], "bma_weights": [], "losses": [], "skipped_images": {}})  # before the zero-shot evaluation
    resumed = RunState.from_dict(pickle.loads(pickle.dumps(before)))
    assert pickle.dumps(resumed.as_dict()) == pickle.dumps(before)

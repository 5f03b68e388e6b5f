"""Framework-free parts of the Dassl glue: fixed-length epochs, checkpoint state, open-class split (CI)."""
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dassl_trainers.checkpoint import ResumableLearner, capture_rng_state, restore_rng_state
from dassl_trainers.iterations import fixed_length_epoch


def test_fixed_length_epoch_chains_passes_and_starts_each_epoch_afresh():
    loader = DataLoader(list(range(5)), batch_size=2, shuffle=False, drop_last=True)  # Dassl's: 2 batches a pass
    epoch = fixed_length_epoch(loader, 4)
    assert len(epoch) == 4
    first = [batch.tolist() for batch in epoch]
    assert first == [[0, 1], [2, 3], [4, 0], [1, 2]]  # full batches, every image of a pass used
    assert [batch.tolist() for batch in epoch] == first  # a new epoch does not continue the interrupted pass


def test_fixed_length_epoch_reshuffles_every_pass():
    loader = DataLoader(list(range(64)), batch_size=64, shuffle=True)
    torch.manual_seed(0)
    passes = [batch.tolist() for batch in fixed_length_epoch(loader, 3)]
    assert all(sorted(p) == list(range(64)) for p in passes) and passes[0] != passes[1]


def test_fixed_length_epoch_keeps_balanced_batches_of_a_batch_sampler_like_order():
    """Dassl's RandomDomainSampler yields whole balanced batches per pass; chained passes stay aligned."""
    loader = DataLoader(list(range(6)), batch_size=3, sampler=[0, 3, 5, 1, 2, 4])
    assert [b.tolist() for b in fixed_length_epoch(loader, 3)] == [[0, 3, 5], [1, 2, 4], [0, 3, 5]]


def test_empty_loader_is_refused():
    with pytest.raises(ValueError, match="empty"):
        fixed_length_epoch(DataLoader([], batch_size=2), 3)


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save({"rng": capture_rng_state()}, tmp_path / "ckpt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(torch.load(tmp_path / "ckpt", weights_only=True)["rng"])  # how Dassl loads (torch >= 2.6)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def tiny_learner(total_steps=4, **kwargs):
    from clipood_plugin import CLIPoodLearner

    torch.manual_seed(0)
    return CLIPoodLearner(model_name="clipood-tiny", pretrained=None, class_names=["cat", "dog"],
                          total_steps=total_steps, precision="fp32", device="cpu", **kwargs)


def test_resumable_learner_state_resumes_mid_run_and_finishes_inference_only(tmp_path):
    images, labels = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    learner = tiny_learner()
    learner.update(images, labels)
    torch.save({"state_dict": ResumableLearner(learner).state_dict()}, tmp_path / "mid")
    learner.update(images, labels)
    learner.update(images, labels)
    learner.update(images, labels)
    final = ResumableLearner(learner).state_dict()["learner"]
    assert "training_step" not in final and final["step"] == 4  # a finished run keeps what predicts, not the optimizer

    resumed = tiny_learner()
    ResumableLearner(resumed).load_state_dict(torch.load(tmp_path / "mid", weights_only=True)["state_dict"])
    assert resumed.step == 1
    for _ in range(3):
        resumed.update(images, labels)
    for key, value in final["inference_encoder"].items():  # the BMA model an uninterrupted run ends with
        assert torch.allclose(resumed.inference_encoder.state_dict()[key], value, atol=1e-6), key


@pytest.mark.needs("dassl")  # its Classification evaluator
def test_base_new_report_against_a_direct_count():
    from dassl import evaluation
    from yacs.config import CfgNode as CN

    from dassl_trainers.open_classes import BaseNewEvaluator

    cfg = CN({"TEST": {"PER_CLASS_RESULT": False, "COMPUTE_CMAT": False}})
    evaluator = BaseNewEvaluator(evaluation.Classification(cfg), num_base=3)
    generator = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(50, 5, generator=generator), torch.randint(0, 5, (50,), generator=generator)
    evaluator.process(logits[:20], labels[:20])
    evaluator.process(logits[20:], labels[20:])
    results = evaluator.evaluate()
    hits = (logits.argmax(1) == labels).numpy()
    base_acc = 100 * hits[labels.numpy() < 3].mean()
    new_acc = 100 * hits[labels.numpy() >= 3].mean()
    assert results["accuracy"] == pytest.approx(100 * hits.mean())
    assert (results["base_accuracy"], results["new_accuracy"]) == (pytest.approx(base_acc), pytest.approx(new_acc))
    assert results["harmonic_mean"] == pytest.approx(2 * base_acc * new_acc / (base_acc + new_acc))

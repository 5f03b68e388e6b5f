"""Open-class split and the base/new report, against a direct count."""
import pytest
import torch

from clipood_plugin.open_classes import BaseNewAccuracy, harmonic_mean, num_base_classes


@pytest.mark.parametrize("ratio,classes,base", [(0.5, 65, 32), (0.5, 345, 172), (0.0, 7, 7), (0.25, 4, 3)])
def test_base_classes_follow_the_authors_split(ratio, classes, base):
    assert num_base_classes(classes, ratio) == base


@pytest.mark.parametrize("ratio", [1.0, -0.1])
def test_ratio_outside_the_range_is_refused(ratio):
    with pytest.raises(ValueError, match="open_class_ratio"):
        num_base_classes(10, ratio)


def test_base_new_accuracy_against_a_direct_count():
    generator = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(50, 5, generator=generator), torch.randint(0, 5, (50,), generator=generator)
    accuracy = BaseNewAccuracy(num_base=3)
    accuracy.update(logits[:20], labels[:20])
    accuracy.update(logits[20:], labels[20:])
    result = accuracy.result()
    hits = logits.argmax(1) == labels
    base = [bool(h) for h, y in zip(hits, labels) if y < 3]
    new = [bool(h) for h, y in zip(hits, labels) if y >= 3]
    assert result["base_acc"] == pytest.approx(sum(base) / len(base))
    assert result["new_acc"] == pytest.approx(sum(new) / len(new))
    assert (result["base_count"], result["new_count"]) == (len(base), len(new))
    assert result["total_acc"] == pytest.approx(hits.float().mean().item())
    b, n = result["base_acc"], result["new_acc"]
    assert result["harmonic_mean"] == pytest.approx(2 / (1 / b + 1 / n))


def test_harmonic_mean_of_nothing_is_zero():
    assert harmonic_mean(0.0, 0.0) == 0.0

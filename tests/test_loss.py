"""MMS against Eq. (3)-(4) written out sample by sample with an explicit D matrix; its margin ablations
(Figure 5c: a fixed margin, no margin) against their own per-sample equations."""
import math

import pytest
import torch
import torch.nn.functional as F

from clipood_plugin import MarginMetricSoftmax, margin_metric_softmax


def explicit_margin_softmax(image, text, labels, scale, margin_of):
    """-log exp(s S(I, T_y)) / sum_c exp(s (S(I, T_c) + margin_of(y, c))) per sample."""
    losses = []
    for i in range(image.shape[0]):
        cos = [float(F.cosine_similarity(image[i], text[c], dim=0)) for c in range(text.shape[0])]
        y = int(labels[i])
        denominator = sum(math.exp(scale * (cos[c] + margin_of(y, c))) for c in range(text.shape[0]))
        losses.append(-math.log(math.exp(scale * cos[y]) / denominator))
    return losses


def explicit_mms(image, text, labels, lam, scale):
    def adaptive(y, c):  # lam * D(T_y, T_c)
        return lam * (1 - float(F.cosine_similarity(text[y], text[c], dim=0)))
    return explicit_margin_softmax(image, text, labels, scale, adaptive)


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_matches_equation_3(lam):
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(5, 16, generator=g, dtype=torch.float64), torch.randn(7, 16, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 3, 6, 3, 1])
    expected = explicit_mms(image, text, labels, lam, scale=10.0)
    per_sample = margin_metric_softmax(image * 3.0, text * 0.5, labels, margin=lam, logit_scale=10.0, reduction="none")
    assert per_sample.tolist() == pytest.approx(expected, rel=1e-5)
    mean = margin_metric_softmax(image, text, labels, margin=lam, logit_scale=10.0)
    assert mean.item() == pytest.approx(sum(expected) / len(expected), rel=1e-5)
    module = MarginMetricSoftmax(margin=lam, logit_scale=10.0)
    assert module(image, text, labels).item() == pytest.approx(mean.item(), rel=1e-6)


def test_margin_only_penalizes_other_classes_by_text_distance():
    # A larger margin can only make the loss larger, and not at all for a class whose text equals the target's.
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    image = torch.tensor([[1.0, 0.2]])
    label = torch.tensor([0])
    no_margin = margin_metric_softmax(image, text, label, margin=0.0, logit_scale=5.0)
    with_margin = margin_metric_softmax(image, text, label, margin=0.5, logit_scale=5.0)
    assert with_margin > no_margin
    same_text = margin_metric_softmax(image, text[:2], label, margin=0.5, logit_scale=5.0)
    assert same_text.item() == pytest.approx(margin_metric_softmax(image, text[:2], label, margin=0.0, logit_scale=5.0).item())


def test_gradient_matches_explicit_form():
    g = torch.Generator().manual_seed(2)
    image = torch.randn(4, 8, generator=g, dtype=torch.float64, requires_grad=True)
    text = torch.randn(5, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([1, 0, 4, 2])
    margin_metric_softmax(image, text, labels, margin=0.3, logit_scale=20.0).backward()
    image2 = image.detach().clone().requires_grad_(True)
    f, t = F.normalize(image2, dim=-1), F.normalize(text, dim=-1)
    D = 1 - t @ t.T
    logits = 20.0 * (f @ t.T + 0.3 * D[labels])
    F.cross_entropy(logits, labels).backward()
    assert torch.allclose(image.grad, image2.grad, atol=1e-10)


def test_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="batch, dim"):
        margin_metric_softmax(torch.randn(3), torch.randn(2, 3), torch.tensor([0]))


@pytest.mark.parametrize("lam", [0.1, 0.3, 1.0])
def test_fixed_margin_is_the_same_lambda_for_every_wrong_class(lam):
    g = torch.Generator().manual_seed(3)
    image, text = torch.randn(5, 16, generator=g, dtype=torch.float64), torch.randn(6, 16, generator=g, dtype=torch.float64)
    labels = torch.tensor([5, 0, 2, 2, 4])
    expected = explicit_margin_softmax(image, text, labels, 10.0, lambda y, c: lam * (c != y))
    got = margin_metric_softmax(image * 2.0, text, labels, margin=lam, logit_scale=10.0, reduction="none",
                                margin_kind="fixed")
    assert got.tolist() == pytest.approx(expected, rel=1e-6)
    assert MarginMetricSoftmax(lam, 10.0, "fixed")(image, text, labels).item() == pytest.approx(
        sum(expected) / len(expected), rel=1e-6)


def test_no_margin_is_the_plain_metric_softmax_whatever_lambda():
    g = torch.Generator().manual_seed(4)
    image, text = torch.randn(4, 8, generator=g, dtype=torch.float64), torch.randn(3, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 2])
    expected = explicit_margin_softmax(image, text, labels, 20.0, lambda y, c: 0.0)  # Eq. 2 with cross-entropy
    got = margin_metric_softmax(image, text, labels, margin=0.7, logit_scale=20.0, reduction="none", margin_kind="none")
    assert got.tolist() == pytest.approx(expected, rel=1e-6)


def test_unknown_margin_kind_is_refused():
    with pytest.raises(ValueError, match="adaptive"):
        margin_metric_softmax(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 1]), margin_kind="additive")
    with pytest.raises(ValueError, match="margin_kind"):
        MarginMetricSoftmax(margin_kind="Fixed")

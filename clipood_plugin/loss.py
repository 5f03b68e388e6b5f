"""Margin Metric Softmax (MMS), Eq. (3)-(4) of the CLIPood paper, and the margins of its ablation (Figure 5c)."""
import torch
import torch.nn.functional as F
from torch import nn

from .settings import MARGIN_KINDS, SETTINGS

DEFAULT_MARGIN = SETTINGS["margin"].default  # the paper's lambda


def check_margin_kind(margin_kind):
    if margin_kind not in MARGIN_KINDS:
        raise ValueError(f"unknown margin_kind {margin_kind!r}; choose one of {MARGIN_KINDS}")


def margin_metric_softmax(image_features, text_features, labels, margin=DEFAULT_MARGIN, logit_scale=100.0,
                          reduction="mean", margin_kind="adaptive", authors_arithmetic=False):
    """Cross-entropy over ``s * (S(I, T_c) + m_c)``, the margin of each wrong class c being
    ``m_c = margin * D(T_y, T_c)`` with ``D = 1 - S(T_y, T_c)`` ("adaptive", MMS), ``m_c = margin``
    ("fixed") or 0 ("none"); the target class never gets one.

    Both feature sets are L2-normalized here. Each margin is computed minus ``margin``, a constant per
    sample that cancels in the softmax; adaptive is the exact shortcut of the paper's code,
    ``(f - margin * T_y) . T_c = S(I, T_c) + margin * D(T_y, T_c) - margin``: one [B, C] matmul.

    ``authors_arithmetic``: the arithmetic of the authors' fp16 code (engine.py lines 164-170): every
    operation in the dtype of the features as given (fp16 under precision "authors-fp16"), and the text
    features used as they come, normalized once when they were encoded, as the authors' are. By default
    the loss is computed in fp32 at least and the text features are normalized here.
    """
    check_margin_kind(margin_kind)
    if image_features.ndim != 2 or text_features.ndim != 2:
        raise ValueError("image_features must be [batch, dim] and text_features [classes, dim], got "
                         f"{tuple(image_features.shape)} and {tuple(text_features.shape)}")
    if authors_arithmetic:
        dtype = image_features.dtype
        image_features = F.normalize(image_features, dim=-1)
    else:
        dtype = torch.promote_types(torch.promote_types(image_features.dtype, text_features.dtype), torch.float32)
        image_features = F.normalize(image_features.to(dtype), dim=-1)  # fp32 at least, also under autocast
        text_features = F.normalize(text_features.to(dtype), dim=-1)
    if margin_kind == "adaptive":
        image_features = image_features - margin * text_features[labels]
    similarities = image_features @ text_features.T
    if margin_kind == "fixed":  # S(I, T_c) + margin * [c != y] - margin
        similarities = similarities - margin * F.one_hot(labels, len(text_features)).to(dtype)
    return F.cross_entropy(logit_scale * similarities, labels, reduction=reduction)


class MarginMetricSoftmax(nn.Module):
    """:func:`margin_metric_softmax` as a module."""

    def __init__(self, margin=DEFAULT_MARGIN, logit_scale=100.0, margin_kind="adaptive"):
        super().__init__()
        check_margin_kind(margin_kind)
        self.margin = margin
        self.logit_scale = logit_scale
        self.margin_kind = margin_kind

    def forward(self, image_features, text_features, labels):
        return margin_metric_softmax(image_features, text_features, labels, self.margin, self.logit_scale,
                                     margin_kind=self.margin_kind)

    def extra_repr(self):
        return f"margin={self.margin}, logit_scale={self.logit_scale}, margin_kind={self.margin_kind}"

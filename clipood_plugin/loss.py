"""Margin Metric Softmax (MMS), Eq. (3)-(4) of the CLIPood paper."""
import torch
import torch.nn.functional as F
from torch import nn


def margin_metric_softmax(image_features, text_features, labels, margin=0.3, logit_scale=100.0,
                          reduction="mean"):
    """Cross-entropy over ``s * (S(I, T_c) + margin * D(T_y, T_c))`` with ``D = 1 - S(T_y, T_c)``.

    Both feature sets are L2-normalized here. Uses the exact shortcut of the paper's code:
    ``(f - margin * T_y) . T_c = S(I, T_c) + margin * D(T_y, T_c) - margin``, and the constant
    ``-margin`` cancels in the softmax, so one [B, C] matmul gives the margin logits.
    """
    if image_features.ndim != 2 or text_features.ndim != 2:
        raise ValueError("image_features must be [batch, dim] and text_features [classes, dim], got "
                         f"{tuple(image_features.shape)} and {tuple(text_features.shape)}")
    dtype = torch.promote_types(torch.promote_types(image_features.dtype, text_features.dtype), torch.float32)
    image_features = F.normalize(image_features.to(dtype), dim=-1)  # fp32 at least, also under autocast
    text_features = F.normalize(text_features.to(dtype), dim=-1)
    logits = logit_scale * (image_features - margin * text_features[labels]) @ text_features.T
    return F.cross_entropy(logits, labels, reduction=reduction)


class MarginMetricSoftmax(nn.Module):
    """:func:`margin_metric_softmax` as a module."""

    def __init__(self, margin=0.3, logit_scale=100.0):
        super().__init__()
        self.margin = margin
        self.logit_scale = logit_scale

    def forward(self, image_features, text_features, labels):
        return margin_metric_softmax(image_features, text_features, labels, self.margin, self.logit_scale)

    def extra_repr(self):
        return f"margin={self.margin}, logit_scale={self.logit_scale}"

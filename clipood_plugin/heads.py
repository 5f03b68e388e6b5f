"""The linear classifier of standard fine-tuning (Eq. 1), the ablation of the metric softmax's text head (Eq. 2)."""
import torch
import torch.nn.functional as F
from torch import nn


class LinearHeadClassifier(nn.Module):
    """Image encoder and a linear classifier on its L2-normalized features, trained and averaged as one module.

    The classifier starts as the zero-shot classifier (WiSE-FT's initialization): weights ``s * T_c``
    (normalized class text features times the logit scale), bias ``b`` (the model's logit bias: SigLIP's;
    0 for CLIP), so before training its logits are exactly the text head's ``s * S(I, T_c) + b``. The
    classifier runs in fp32 also under autocast, as the text head's logits do.
    """

    def __init__(self, encoder, text_features, logit_scale, logit_bias=0.0):
        super().__init__()
        self.encoder = encoder
        num_classes, dim = text_features.shape
        self.classifier = nn.Linear(dim, num_classes, device=text_features.device)
        with torch.no_grad():
            self.classifier.weight.copy_(logit_scale * F.normalize(text_features.float(), dim=-1))
            self.classifier.bias.fill_(logit_bias)

    def forward(self, images):
        features = self.encoder(images)
        with torch.autocast(features.device.type, enabled=False):
            return self.classifier(F.normalize(features.float(), dim=-1))

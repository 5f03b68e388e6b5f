"""One check that pretrained weights named apart from a run (``--pretrained``, ``pretrained=``) are the ones it
started from: their text tower must give the run's text features. Every path that rebuilds a text tower or
theta_0 from such weights calls it: `clipood export`, ``load_learner(pretrained=...)`` (and so `clipood evaluate`
with other class names), WiSE-FT's theta_0."""
import torch.nn.functional as F

from .settings import DataError

# text features of this many classes, recomputed from the pretrained text tower, must match the saved ones
CHECKED_CLASSES = 8
MIN_TEXT_COSINE = 0.99  # far above what other weights give, below fp32 drift between devices


def check_run_weights(prompt_encoder, class_names, text_features, pretrained):
    """DataError unless ``prompt_encoder`` (the text tower of the weights ``pretrained``, with the run's templates)
    encodes ``class_names`` to the run's ``text_features`` [C, D]."""
    names = list(class_names)[:CHECKED_CLASSES]
    features = prompt_encoder.encode(names).float()
    cosine = F.cosine_similarity(features, text_features[:len(names)].float().to(features.device), dim=-1).min().item()
    if not cosine >= MIN_TEXT_COSINE:
        raise DataError(f"the text tower of {str(pretrained)!r} does not give the run's text features (cosine "
                        f"{cosine:.3f}): these are not the weights the run started from; pass those with "
                        "--pretrained FILE")

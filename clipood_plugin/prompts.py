"""Class-prompt text features: templates x class names -> normalized, cached [C, D] features."""
import torch
from open_clip import build_zero_shot_classifier

DEFAULT_TEMPLATES = ("a photo of a {}.",)


def prompt_class_name(name: str) -> str:
    """Class folder names use "_" for spaces ("golden_retriever" -> "golden retriever")."""
    return name.replace("_", " ")


class PromptEncoder:
    """Encodes class names with CLIP's frozen text tower; several templates are ensembled.

    ``clip_model`` only needs ``encode_text``; its image tower is never used here.
    """

    def __init__(self, clip_model, tokenizer, templates=DEFAULT_TEMPLATES):
        if isinstance(templates, str):
            templates = (templates,)
        templates = tuple(templates)
        bad = [t for t in templates if "{}" not in t]
        if not templates or bad:
            raise ValueError(f"each prompt template needs one '{{}}' for the class name, got {bad or templates}")
        self.clip_model = clip_model
        self.tokenizer = tokenizer
        self.templates = templates

    @torch.no_grad()
    def encode(self, class_names, device=None):
        """[C, D] L2-normalized text features (mean of per-template normalized embeddings, renormalized).

        With ``device`` the text tower visits that device only for this call, so it holds no
        accelerator memory between re-encodings.
        """
        class_names = list(class_names)
        if not class_names:
            raise ValueError("class_names is empty")
        home = next(self.clip_model.parameters()).device
        device = torch.device(device) if device is not None else home
        self.clip_model.to(device)
        try:
            features = build_zero_shot_classifier(
                self.clip_model, self.tokenizer, [prompt_class_name(c) for c in class_names],
                self.templates, num_classes_per_batch=64, device=device)
        finally:
            self.clip_model.to(home)
        return features.T.float().contiguous()

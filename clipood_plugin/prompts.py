"""Class-prompt text features: templates x class names -> normalized, cached [C, D] features."""
import torch
from open_clip import build_zero_shot_classifier
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from .settings import SETTINGS, check_settings

DEFAULT_TEMPLATES = SETTINGS["templates"].default  # the paper's
# the named template sets (settings.TEMPLATE_PRESET_NAMES), as format strings; open_clip ships OpenAI's as callables
TEMPLATE_PRESETS = {"openai_imagenet": tuple(template("{}") for template in OPENAI_IMAGENET_TEMPLATES)}


def expand_templates(templates):
    """The templates as format strings: a named set (e.g. "openai_imagenet") is its templates."""
    templates = (templates,) if isinstance(templates, str) else tuple(templates)
    return TEMPLATE_PRESETS[templates[0]] if len(templates) == 1 and templates[0] in TEMPLATE_PRESETS else templates


def prompt_class_name(name: str) -> str:
    """Class folder names use "_" for spaces ("golden_retriever" -> "golden retriever")."""
    return name.replace("_", " ")


def check_class_names(class_names, tokenizer):
    """``class_names`` as a list, or ValueError if two of them would get the same text features.

    Names collide when their prompts tokenize alike: after "_" becomes a space and the tokenizer's own
    normalization (CLIP's lowercases and collapses whitespace), "golden_retriever", "Golden Retriever"
    and "golden retriever" are one prompt, and a class that shares its features with another can never
    be predicted. A bare string is refused rather than read as one class per character.
    """
    if not isinstance(class_names, (str, bytes)):
        class_names = list(class_names)  # e.g. dict keys, a generator
    check_settings({"class_names": class_names})
    empty = [i for i, name in enumerate(class_names) if not prompt_class_name(name).strip()]
    if empty:
        raise ValueError(f"class names at positions {empty} are empty (or only '_' and spaces)")
    by_prompt = {}
    for name, tokens in zip(class_names, tokenizer([prompt_class_name(name) for name in class_names]).tolist()):
        by_prompt.setdefault(tuple(tokens), []).append(name)
    collisions = [names for names in by_prompt.values() if len(names) > 1]
    if collisions:
        raise ValueError("class names that give the same prompt (and so the same text features, leaving one of "
                         "them never predicted): " + "; ".join(" = ".join(map(repr, names)) for names in collisions)
                         + ". Give each class a distinct name")
    return class_names


class PromptEncoder:
    """Encodes class names with CLIP's frozen text tower; several templates (or a named set of them,
    TEMPLATE_PRESETS) are ensembled.

    ``clip_model`` only needs ``encode_text``; its image tower is never used here.

    ``authors_arithmetic``: the features as the authors' get_text_features makes them (engine.py lines
    115-122): each prompt's embedding divided by its norm once, in the text tower's own dtype (fp16 under
    precision "authors-fp16", whose norms then differ from 1 by up to about 4e-4), and kept in that dtype.
    Several templates, which the authors' code does not have, are averaged and renormalized in that dtype.
    By default open_clip's build_zero_shot_classifier ensembles them, and the features are fp32.
    """

    def __init__(self, clip_model, tokenizer, templates=DEFAULT_TEMPLATES, authors_arithmetic=False):
        check_settings({"templates": templates})
        self.clip_model = clip_model
        self.tokenizer = tokenizer
        self.templates = expand_templates(templates)
        self.authors_arithmetic = bool(authors_arithmetic)

    @torch.no_grad()
    def encode(self, class_names, device=None):
        """[C, D] L2-normalized text features (mean of per-template normalized embeddings, renormalized).

        With ``device`` the text tower visits that device only for this call, so it holds no
        accelerator memory between re-encodings.
        """
        class_names = check_class_names(class_names, self.tokenizer)
        home = next(self.clip_model.parameters()).device
        device = torch.device(device) if device is not None else home
        self.clip_model.to(device)
        try:
            if self.authors_arithmetic:
                return self._normalized_once(class_names, device)
            features = build_zero_shot_classifier(
                self.clip_model, self.tokenizer, [prompt_class_name(c) for c in class_names],
                self.templates, num_classes_per_batch=64, device=device)
        finally:
            self.clip_model.to(home)
        return features.T.float().contiguous()

    def _normalized_once(self, class_names, device):
        per_template = []
        for template in self.templates:
            tokens = self.tokenizer([template.format(prompt_class_name(c)) for c in class_names]).to(device)
            embeddings = self.clip_model.encode_text(tokens)
            per_template.append(embeddings / embeddings.norm(dim=-1, keepdim=True))
        if len(per_template) == 1:
            return per_template[0]
        mean = torch.stack(per_template).mean(dim=0)
        return mean / mean.norm(dim=-1, keepdim=True)

"""One open_clip model family per row, as tiny offline stand-ins of the real models.

A stand-in ``clipood-test-<model>`` is the real model's open_clip config shrunk in width and depth (2 blocks of
width 64; a timm tower is timm's own model function for the real tower, called with those sizes), and keeps
everything else: image size and patch size, QuickGELU, the timm model class and pooling, the text tower's pooling,
mask and activation, context length, tokenizer and the initial logit bias. Its pretrained config for the real tag
is the real one (weights repo, normalization, resize), so the tag resolves the weights and the QuickGELU variant as
for the real model, from a synthetic hub-cache entry (pretrained_cache.py). Stand-ins exist only in the process
that called ``register_standins``.
"""
import copy
import json
from dataclasses import dataclass

import open_clip

STANDIN_PREFIX = "clipood-test-"
TINY_WIDTH, TINY_DEPTH, TINY_HEADS = 64, 2, 2
# timm's model function of each real timm tower -> its sizes at the stand-in's scale
TINY_TIMM_SIZES = {
    "vit_base_patch16_siglip_224": dict(embed_dim=TINY_WIDTH, depth=TINY_DEPTH, num_heads=TINY_HEADS),
    "eva02_base_patch16_clip_224": dict(embed_dim=TINY_WIDTH, depth=TINY_DEPTH, num_heads=TINY_HEADS),
    "fastvit_mci1": dict(layers=(1, 1, 1, 1), embed_dims=(16, 32, 64, 128)),
    "convnext_base": dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)),
}
# the synthetic Hugging Face tokenizer's words (SigLIP's tokenizer is Hugging Face's): the tests' prompts and
# the class names of clipood_plugin.synthetic's shapes and of test_dassl_integration's PACS
TOKENIZER_WORDS = "a photo of dog cat golden retriever circle square triangle star elephant giraffe guitar".split()


@dataclass(frozen=True)
class Family:
    id: str
    model: str  # the real open_clip model name
    tag: str
    needs: tuple = ()  # conftest requirements (packages the family needs)

    @property
    def standin(self):
        return STANDIN_PREFIX + self.model


# one tag per family (README's backbone table lists them)
FAMILIES = (
    Family("openai-vit-b-16", "ViT-B-16", "openai"),
    Family("laion-vit-b-16", "ViT-B-16", "laion2b_s34b_b88k"),
    Family("laion-vit-l-14", "ViT-L-14", "laion2b_s32b_b82k"),
    Family("openai-vit-l-14-336", "ViT-L-14-336", "openai"),
    Family("metaclip-vit-b-16", "ViT-B-16-quickgelu", "metaclip_fullcc"),
    Family("dfn-vit-b-16", "ViT-B-16", "dfn2b"),
    Family("siglip-vit-b-16", "ViT-B-16-SigLIP", "webli", needs=("transformers",)),
    Family("siglip2-vit-b-16", "ViT-B-16-SigLIP2", "webli", needs=("transformers",)),
    Family("eva02-b-16", "EVA02-B-16", "merged2b_s8b_b131k"),
    Family("mobileclip-s1", "MobileCLIP-S1", "datacompdr"),
    Family("convnext-base", "convnext_base", "laion400m_s13b_b51k"),
)


def _tiny_timm_model_name(real):
    """A timm model name for ``real``'s model function at the stand-in's sizes, registered with timm once."""
    import timm
    from timm.models import register_model

    name = f"clipood_test_{real}"
    if not timm.is_model(name):
        real_fn = timm.models.model_entrypoint(real)

        def tiny(pretrained=False, **kwargs):
            return real_fn(pretrained=pretrained, **dict(TINY_TIMM_SIZES[real], **kwargs))
        tiny.__name__ = name  # timm registers a model function under its name
        register_model(tiny)
    return name


def _shrunk(config):
    config = copy.deepcopy(config)
    config["embed_dim"] = TINY_WIDTH  # = the tower width: SigLIP's timm tower has no projection
    vision, text = config["vision_cfg"], config["text_cfg"]
    if vision.get("timm_model_name"):
        vision["timm_model_name"] = _tiny_timm_model_name(vision["timm_model_name"])
    else:
        vision.update(width=TINY_WIDTH, layers=TINY_DEPTH, head_width=TINY_WIDTH // TINY_HEADS)
    text.update(width=TINY_WIDTH, heads=TINY_HEADS, layers=TINY_DEPTH)
    if text.get("hf_tokenizer_name"):  # the synthetic tokenizer's ids; CLIP's tokenizer needs the whole vocabulary
        text["vocab_size"] = len(hugging_face_tokenizer_vocab())
    return config


def register_standins(config_dir):
    """Register every family's stand-in (and its QuickGELU twin, where the real model has one) with open_clip,
    and the real tag's pretrained config under the stand-in's name; writes the configs into ``config_dir``."""
    models = {family.model for family in FAMILIES}
    models |= {model + "-quickgelu" for model in models if model + "-quickgelu" in open_clip.list_models()}
    if all(STANDIN_PREFIX + model in open_clip.list_models() for model in models):
        return
    for model in models:
        config = _shrunk(open_clip.get_model_config(model))
        (config_dir / f"{STANDIN_PREFIX}{model}.json").write_text(json.dumps(config))
    open_clip.add_model_config(config_dir)
    # the family's tag under each stand-in whose real model has it (a QuickGELU tag also names the "-quickgelu"
    # twin); open_clip has no public way to add a pretrained config: its registry, test-only
    for family in FAMILIES:
        for model in (family.model, family.model + "-quickgelu"):
            if open_clip.pretrained.is_pretrained_cfg(model, family.tag):
                open_clip.pretrained._PRETRAINED.setdefault(STANDIN_PREFIX + model, {})[family.tag] = \
                    dict(open_clip.get_pretrained_cfg(model, family.tag))


def hugging_face_tokenizer_vocab():
    return {"<pad>": 0, "</s>": 1, "<unk>": 2, **{word: i + 3 for i, word in enumerate(TOKENIZER_WORDS)}}


def hugging_face_tokenizer_files():
    """A word-level Hugging Face tokenizer ending each text with </s> (as a hub repo holds it: file name ->
    text), and the files a download found absent on the hub (the cache records them, transformers asks)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.WordLevel(hugging_face_tokenizer_vocab(), unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "eos_token": "</s>",
              "unk_token": "<unk>"}
    return {"tokenizer.json": tokenizer.to_str(), "tokenizer_config.json": json.dumps(config)}, ("config.json",)

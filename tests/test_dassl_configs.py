"""The Dassl trainer configs hold the paper's settings (CI: yacs only, no Dassl)."""
from pathlib import Path

import pytest
from yacs.config import CfgNode as CN

from dassl_trainers.config import add_config_defaults, apply_per_dataset_settings, clipood_node

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "dassl" / "trainers" / "CLIPood"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Issue 4 / METHOD.md: epochs of the base-to-new runs, by CoOp's DATASET.NAME
BASE2NEW_EPOCHS = {"ImageNet": 10, "Caltech101": 1, "OxfordPets": 1, "StanfordCars": 5, "OxfordFlowers": 1,
                   "Food101": 1, "FGVCAircraft": 10, "SUN397": 5, "DescribableTextures": 1, "EuroSAT": 1, "UCF101": 2}
# METHOD.md: prompt per CoOp dataset; all others "a photo of a {}."
BASE2NEW_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.", "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.", "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.", "Food101": "a photo of {}, a type of food.",
    "UCF101": "a photo of a person doing {}.",
}


def decoded(node):
    """Leaves parsed as yacs parses values merged over Dassl's defaults ("(224, 224)" -> a tuple)."""
    return CN({key: decoded(value) if isinstance(value, CN) else CN._decode_cfg_value(value)
               for key, value in node.items()})


def load(name, dataset):
    """The config as the trainer sees it for ``dataset``: the YAML (whose TRAINER.CLIPOOD keys must all
    be keys of the node) with its per-dataset entry applied."""
    with open(CONFIG_DIR / f"{name}.yaml") as f:
        cfg = decoded(CN.load_cfg(f))
    node = clipood_node()
    node.merge_from_other_cfg(cfg.TRAINER.CLIPOOD)
    cfg.TRAINER.CLIPOOD = node
    cfg.DATASET = CN({"NAME": dataset})
    cfg.freeze()
    return apply_per_dataset_settings(cfg)[0]


def assert_common_recipe(cfg):
    assert cfg.OPTIM.NAME == "adamw" and cfg.OPTIM.LR_SCHEDULER == "cosine"
    assert cfg.OPTIM.WEIGHT_DECAY == pytest.approx(0.1)
    assert cfg.OPTIM.WARMUP_EPOCH <= 0
    assert cfg.TRAINER.CLIPOOD.ITERS_PER_EPOCH == 500
    assert cfg.TRAINER.CLIPOOD.PRETRAINED == "openai" and cfg.MODEL.BACKBONE.NAME == "ViT-B/16"
    assert list(cfg.INPUT.PIXEL_MEAN) == CLIP_MEAN and list(cfg.INPUT.PIXEL_STD) == CLIP_STD
    assert tuple(cfg.INPUT.SIZE) == (224, 224) and cfg.INPUT.INTERPOLATION == "bicubic"
    assert cfg.TRAINER.CLIPOOD.PREC == "auto"  # this project's numerics: fp32 master weights
    assert set(cfg.INPUT.TRANSFORMS) == {"random_resized_crop", "random_flip", "normalize"}
    assert tuple(cfg.INPUT.RRCROP_SCALE) == (0.7, 1.0)


@pytest.mark.parametrize("dataset", sorted(BASE2NEW_EPOCHS))
def test_base2new_config_reproduces_reference_run(dataset):
    cfg = load("vit_b16_base2new", dataset)
    assert_common_recipe(cfg)
    assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 36
    assert cfg.OPTIM.LR == pytest.approx(5e-6)
    assert cfg.TRAINER.CLIPOOD.MMS_LAMBDA == pytest.approx(0.3)
    assert cfg.TRAINER.CLIPOOD.BMA_BETA == pytest.approx(0.1)
    assert cfg.OPTIM.MAX_EPOCH == BASE2NEW_EPOCHS[dataset]
    assert list(cfg.TRAINER.CLIPOOD.TEMPLATES) == [BASE2NEW_TEMPLATES.get(dataset, "a photo of a {}.")]


@pytest.mark.parametrize("variant", ["ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"])
def test_imagenet_variants_share_imagenets_horizon(variant):
    """Eval-only on a variant builds the learner with ImageNet's step count, so the checkpoint loads as is."""
    assert load("vit_b16_base2new", variant).OPTIM.MAX_EPOCH == load("vit_b16_base2new", "ImageNet").OPTIM.MAX_EPOCH


@pytest.mark.parametrize("dataset, lr, epochs", [("PACS", 5e-6, 10), ("VLCS", 5e-6, 10), ("OfficeHomeDG", 1e-5, 10),
                                                 ("DomainNet", 1e-5, 20)])
def test_domain_generalization_config(dataset, lr, epochs):
    cfg = load("vit_b16_dg", dataset)
    assert_common_recipe(cfg)
    assert cfg.TRAINER.CLIPOOD.MMS_LAMBDA == pytest.approx(0.3)
    assert cfg.TRAINER.CLIPOOD.BMA_BETA == pytest.approx(0.5)
    assert not cfg.TRAINER.CLIPOOD.OPEN_CLASSES
    assert (cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH) == (pytest.approx(lr), epochs)
    assert cfg.DATALOADER.TRAIN_X.SAMPLER == "RandomDomainSampler"
    sources = 5 if dataset == "DomainNet" else 3
    assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 12 * sources  # 12 per source domain


@pytest.mark.parametrize("dataset, lr, lam, beta, epochs", [("OfficeHomeDG", 3e-6, 0.1, 0.1, 10),
                                                            ("DomainNet", 5e-6, 0.1, 0.5, 20)])
def test_open_class_config(dataset, lr, lam, beta, epochs):
    cfg = load("vit_b16_dg_open_class", dataset)
    assert_common_recipe(cfg)
    settings = cfg.TRAINER.CLIPOOD
    assert settings.OPEN_CLASSES
    assert (cfg.OPTIM.LR, settings.MMS_LAMBDA, settings.BMA_BETA, cfg.OPTIM.MAX_EPOCH) == (
        pytest.approx(lr), pytest.approx(lam), pytest.approx(beta), epochs)


def test_every_template_has_one_slot_for_the_class_name():
    for name in ("vit_b16_base2new", "vit_b16_dg", "vit_b16_dg_open_class"):
        for dataset in list(BASE2NEW_EPOCHS) + ["PACS"]:
            for template in load(name, dataset).TRAINER.CLIPOOD.TEMPLATES:
                assert template.count("{}") == 1, (name, dataset, template)


def test_per_dataset_entry_wins_and_is_itself_overridable():
    cfg = CN({"DATASET": {"NAME": "OxfordPets"}, "OPTIM": {"MAX_EPOCH": 7}, "TRAINER": {"CLIPOOD": clipood_node()}})
    cfg.merge_from_list(["TRAINER.CLIPOOD.PER_DATASET", {"OxfordPets": {"OPTIM": {"MAX_EPOCH": 1}}}])
    resolved, changes = apply_per_dataset_settings(cfg)
    assert resolved.OPTIM.MAX_EPOCH == 1 and changes == ["OPTIM.MAX_EPOCH 7 -> 1"]  # shown in the log
    assert cfg.OPTIM.MAX_EPOCH == 7  # the caller's cfg is left alone
    cfg.merge_from_list(["TRAINER.CLIPOOD.PER_DATASET.OxfordPets.OPTIM.MAX_EPOCH", "3"])
    assert apply_per_dataset_settings(cfg)[0].OPTIM.MAX_EPOCH == 3
    cfg.DATASET.NAME = "EuroSAT"
    assert apply_per_dataset_settings(cfg) == (cfg, [])


def test_per_dataset_entry_with_unknown_key_is_refused():
    cfg = CN({"DATASET": {"NAME": "PACS"}, "OPTIM": {"LR": 1e-5}, "TRAINER": {"CLIPOOD": clipood_node()}})
    cfg.merge_from_list(["TRAINER.CLIPOOD.PER_DATASET", {"PACS": {"OPTIM": {"LRR": 1e-5}}}])
    with pytest.raises(KeyError, match="OPTIM.LRR"):
        apply_per_dataset_settings(cfg)


def test_config_defaults_are_added_once_and_keep_what_is_there():
    cfg = CN({"DATASET": {"NAME": ""}, "TRAINER": {"NAME": ""}})
    add_config_defaults(cfg)
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "all" and cfg.TRAINER.CLIPOOD.ITERS_PER_EPOCH == 500
    cfg.DATASET.SUBSAMPLE_CLASSES = "base"  # what CoOp's extend_cfg / a config file may do afterwards
    cfg.TRAINER.CLIPOOD.MMS_LAMBDA = 0.1
    add_config_defaults(cfg)
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "base" and cfg.TRAINER.CLIPOOD.MMS_LAMBDA == 0.1
    clone = cfg.clone()  # get_cfg_default() clones: the per-dataset node must still accept new datasets
    clone.merge_from_list(["TRAINER.CLIPOOD.PER_DATASET", {"PACS": {"OPTIM": {"LR": 1e-5}}}])
    assert clone.TRAINER.CLIPOOD.PER_DATASET.PACS.OPTIM.LR == 1e-5


@pytest.mark.parametrize("name", ["vit_b16_base2new", "vit_b16_dg", "vit_b16_dg_open_class"])
@pytest.mark.parametrize("dataset", sorted(BASE2NEW_EPOCHS) + ["PACS", "OfficeHomeDG", "DomainNet"])
def test_the_paper_numerics_variant_is_the_same_recipe_in_the_authors_numerics(name, dataset):
    """*_paper_numerics.yaml: the authors' fp16 arithmetic and their transforms' bilinear resize (their
    converter_dassl.py lines 85-96 use torchvision's default interpolation); nothing else differs."""
    paper = load(f"{name}_paper_numerics", dataset).clone()
    assert (paper.TRAINER.CLIPOOD.PREC, paper.INPUT.INTERPOLATION) == ("authors-fp16", "bilinear")
    paper.defrost()
    paper.TRAINER.CLIPOOD.PREC, paper.INPUT.INTERPOLATION = "auto", "bicubic"
    assert paper == load(name, dataset)

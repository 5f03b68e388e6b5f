"""What the CLIP hparams do to DomainBed's own dataset objects and hparams registry (a real, unmodified
DomainBed; skipped when it is not importable): the authors' transforms (``clip_transforms``), base-class
training environments (``open_class_ratio``) and class names carried by the hparams.
"""
import pytest
import torch
from PIL import Image
from torchvision import transforms

from domainbed_images import write_pacs_tree

pytestmark = [
    pytest.mark.needs("domainbed", "wilds"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]
# written out here rather than imported: the test's own formulation of the authors' pipeline
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGES_PER_CLASS = 2


@pytest.fixture(scope="module")
def domainbed():
    import domainbed_adapter
    domainbed_adapter.register()
    from domainbed import datasets, hparams_registry
    return datasets, hparams_registry


@pytest.fixture(scope="module")
def pacs_root(tmp_path_factory):
    return str(write_pacs_tree(tmp_path_factory.mktemp("data"), IMAGES_PER_CLASS, height=30, width=40))


def pacs(domainbed, root, test_envs=(0,), **overrides):
    datasets, hparams_registry = domainbed
    hparams = {**hparams_registry.default_hparams("CLIPood", "PACS"), **overrides}
    return datasets.PACS(root, list(test_envs), hparams)


def pipeline(*steps, mean, std):
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(mean, std)])


def open_image(environment, index):
    return Image.open(environment.samples[index][0]).convert("RGB")


def test_clipood_transforms_are_the_authors_pipeline(domainbed, pacs_root):
    dataset = pacs(domainbed, pacs_root, clip_transforms="clipood")
    test_env, train_env = dataset.datasets[0], dataset.datasets[1]
    evaluation = pipeline(transforms.Resize(224), transforms.CenterCrop(224), mean=CLIP_MEAN, std=CLIP_STD)
    # training crops are uint8 pixels, normalized by the learner on its device
    training = transforms.Compose([transforms.RandomResizedCrop(224, scale=(0.7, 1.0)),
                                   transforms.RandomHorizontalFlip(), transforms.PILToTensor()])
    for index in (0, 5):
        assert torch.equal(test_env[index][0], evaluation(open_image(test_env, index)))
        for seed in range(3):  # same random crop and flip draws on both sides
            torch.manual_seed(seed)
            augmented = train_env[index][0]
            torch.manual_seed(seed)
            # torch's 8-bit resize of the crop (issue 26's bounds against PIL's: max 3, mean 0.3 of 255 levels)
            difference = (augmented.float() - training(open_image(train_env, index)).float()).abs()
            assert augmented.dtype == torch.uint8 and difference.max() <= 3 and difference.mean() <= 0.3


def test_without_data_augmentation_training_environments_get_the_test_pipeline(domainbed, pacs_root):
    dataset = pacs(domainbed, pacs_root, clip_transforms="clipood", data_augmentation=False)
    evaluation = pipeline(transforms.Resize(224), transforms.CenterCrop(224), mean=CLIP_MEAN, std=CLIP_STD)
    environment = dataset.datasets[2]
    assert torch.equal(environment[3][0], evaluation(open_image(environment, 3)))


def test_the_default_keeps_domainbeds_own_transforms(domainbed, pacs_root):
    dataset = pacs(domainbed, pacs_root)
    squash = pipeline(transforms.Resize((224, 224)), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    crop = pipeline(transforms.Resize(224), transforms.CenterCrop(224), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    environment = dataset.datasets[0]
    image = open_image(environment, 1)
    assert torch.equal(environment[1][0], squash(image)) and not torch.equal(environment[1][0], crop(image))


def test_open_classes_leave_base_class_images_in_the_training_environments_only(domainbed, pacs_root):
    from domainbed_adapter.class_names import FOLDER_CLASS_NAMES
    plain, wild = pacs(domainbed, pacs_root, test_envs=(2,)), pacs(domainbed, pacs_root, test_envs=(2,),
                                                                   open_class_ratio=0.5)
    assert wild.num_classes == plain.num_classes == 7
    for i, (everything, environment) in enumerate(zip(plain.datasets, wild.datasets)):
        labels = sorted(int(environment[j][1]) for j in range(len(environment)))
        if i == 2:  # the test environment keeps every class
            assert labels == sorted(int(everything[j][1]) for j in range(len(everything)))
        else:  # int((1 - 0.5) * 7) = 3 base classes, every one of their images
            assert labels == sorted(list(range(3)) * IMAGES_PER_CLASS)
        assert environment.classes == FOLDER_CLASS_NAMES["PACS"]  # labels keep their names


def test_a_dataset_built_without_the_registered_constructor_is_refused(domainbed, pacs_root):
    datasets, hparams_registry = domainbed
    from domainbed_adapter.data import check_prepared
    hparams = {**hparams_registry.default_hparams("CLIPood", "PACS"), "clip_transforms": "clipood"}
    # DomainBed's base class is not in DATASETS: built through it, nothing is applied
    unprepared = datasets.MultipleEnvironmentImageFolder(pacs_root + "/PACS", [0], True, hparams)
    with pytest.raises(ValueError, match="not built through a registered domainbed.datasets class"):
        check_prepared(unprepared, hparams)
    check_prepared(unprepared, hparams_registry.default_hparams("CLIPood", "PACS"))  # defaults ask for nothing


def test_bad_clip_transforms_are_refused_with_the_fix(domainbed, pacs_root):
    datasets, hparams_registry = domainbed
    with pytest.raises(ValueError, match="choose one of"):
        pacs(domainbed, pacs_root, clip_transforms="openai")
    hparams = {**hparams_registry.default_hparams("CLIPood", "Debug224"), "clip_transforms": "clipood"}
    with pytest.raises(ValueError, match="use clip_transforms 'domainbed'"):
        datasets.Debug224(None, [0], hparams)  # tensors: no image transform to replace


@pytest.mark.parametrize("kind", ["default", "random"])
def test_registry_hparams_carry_the_class_names_of_every_known_dataset(domainbed, kind):
    datasets, hparams_registry = domainbed
    from domainbed_adapter.class_names import FOLDER_CLASS_NAMES, LABEL_CLASS_NAMES
    known = {**FOLDER_CLASS_NAMES, **LABEL_CLASS_NAMES}
    assert set(known) <= set(datasets.DATASETS)
    for dataset in datasets.DATASETS:
        for algorithm in ("CLIPood", "CLIPERM", "CLIPZeroShot"):
            hparams = (hparams_registry.default_hparams(algorithm, dataset) if kind == "default"
                       else hparams_registry.random_hparams(algorithm, dataset, 5))
            assert hparams["class_names"] == known.get(dataset), (dataset, algorithm)


def test_an_algorithm_built_from_registry_hparams_outside_train_py_gets_the_real_names(domainbed):
    import warnings

    from domainbed import algorithms
    from domainbed_adapter.class_names import FOLDER_CLASS_NAMES
    _, hparams_registry = domainbed
    hparams = {**hparams_registry.default_hparams("CLIPZeroShot", "PACS"), "clip_model": "clipood-tiny",
               "clip_pretrained": None}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no placeholder-names warning
        algorithm = algorithms.get_algorithm_class("CLIPZeroShot")((3, 224, 224), 7, 3, dict(hparams))
    assert algorithm.class_names == FOLDER_CLASS_NAMES["PACS"]
    with pytest.raises(ValueError, match="7 class names from the hparam class_names but the dataset has 6 classes"):
        algorithms.get_algorithm_class("CLIPZeroShot")((3, 224, 224), 6, 3, dict(hparams))


def test_in_the_wild_with_a_linear_head_is_refused_before_training(domainbed):
    from domainbed import algorithms
    _, hparams_registry = domainbed
    hparams = {**hparams_registry.default_hparams("CLIPood", "PACS"), "clip_model": "clipood-tiny",
               "clip_pretrained": None, "steps": 2, "open_class_ratio": 0.5, "head": "linear", "margin_kind": "none"}
    with pytest.raises(ValueError, match="open_class_ratio > 0 needs the text head"):
        algorithms.get_algorithm_class("CLIPood")((3, 224, 224), 7, 3, hparams)

"""The transforms of a model's input: training (the paper's augmentation, as uint8 pixels the learner normalizes
on its device) and evaluation (open_clip's preprocessing), a float transform's uint8 form, and ToTensor-then-
Normalize as one affine map of 0-255 pixels. Imports neither open_clip nor torchvision until used, so that the
framework adapters can import it while they register.
"""
import torch

from .image_input import ImageInput


def pixel_normalization(mean, std):
    """(shift, scale) [1, 3, 1, 1] of ToTensor then Normalize(mean, std) as one affine map of 0-255 pixels:
    x / 255 normalized is x * scale + shift, one addcmul."""
    mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
    return (-mean / std).view(1, 3, 1, 1), (1 / (255 * std)).view(1, 3, 1, 1)


def input_transforms(image_input: ImageInput):
    """(training, evaluation) transforms of PIL images into a model's input: the paper's augmentation
    (RandomResizedCrop scale 0.7-1 and a horizontal flip) at the input's size and interpolation, as uint8
    pixels [3, H, W] that the learner normalizes on its device (``crop_and_flip_pixels``), and open_clip's own
    evaluation preprocessing of that input (resize by its resize_mode, center crop, normalization), the
    transform open_clip.create_model_and_transforms returns for it."""
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from torchvision.transforms import InterpolationMode

    training = crop_and_flip_pixels(image_input.size, (0.7, 1.0), (3 / 4, 4 / 3),
                                    InterpolationMode(image_input.interpolation), flip_p=0.5)
    evaluation = image_transform_v2(PreprocessCfg(**image_input.preprocess_cfg), is_train=False)
    return training, evaluation


def crop_and_flip_pixels(size, scale, ratio, interpolation, flip_p):
    """RandomResizedCrop then RandomHorizontalFlip (``flip_p`` None: none) as uint8 pixels [3, H, W]: the PIL
    image becomes a tensor first, and torch's 8-bit antialiased resize crops it, within a level or two of PIL's
    resize and about three times as fast. Same random draws as torchvision's PIL transforms, in the same order
    (torchvision's v2 transforms draw as v1's), so a seed gives the same crops and flips either way."""
    from torchvision.transforms import v2

    flip = [] if flip_p is None else [v2.RandomHorizontalFlip(flip_p)]
    return v2.Compose([v2.PILToTensor(), v2.RandomResizedCrop(size, scale, ratio, interpolation, antialias=True),
                       *flip])


def uint8_transform(transform):
    """``transform`` (a torchvision Compose of PIL images) emitting uint8 pixels instead of floats, which the
    learner normalizes with the model's own statistics: the paper's RandomResizedCrop (antialiased bilinear or
    bicubic) and optional flip become ``crop_and_flip_pixels``; any other closing ToTensor, or ToTensor and
    Normalize, becomes PILToTensor. None when it does anything else on tensors (cutout, noise, ...): it stays
    float."""
    from torchvision import transforms

    steps = list(getattr(transform, "transforms", ()))
    if steps and isinstance(steps[-1], transforms.Normalize):
        steps.pop()
    if not steps or type(steps[-1]) is not transforms.ToTensor:
        return None
    steps.pop()
    kinds = [type(step) for step in steps]
    if kinds in ([transforms.RandomResizedCrop], [transforms.RandomResizedCrop, transforms.RandomHorizontalFlip]) \
            and steps[0].antialias and steps[0].interpolation.value in ("bilinear", "bicubic"):
        crop = steps[0]
        return crop_and_flip_pixels(crop.size, crop.scale, crop.ratio, crop.interpolation,
                                    steps[1].p if len(steps) == 2 else None)
    return transforms.Compose([*steps, transforms.PILToTensor()])

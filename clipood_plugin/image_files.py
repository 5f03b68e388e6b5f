"""Training image files as uint8 pixels [3, H, W]: plain JPEGs through torchvision's decoder (libjpeg-turbo on
the CPU, nvJPEG on CUDA), every other file through PIL, as the CPU path has always read them.

A plain JPEG is an RGB or grayscale baseline JPEG whose data ends with the end-of-image marker; CMYK and
progressive JPEGs go to PIL, and so does a truncated file (PIL then finds it unreadable, and the ImageList's
policy for unreadable images applies). A JPEG that torchvision's decoder still rejects is decoded by PIL.
"""
import warnings

import torch
from torchvision.transforms import functional

from .data import ImageList, open_image, rgb_image

_PLAIN_JPEG_MODES = ("RGB", "L")
_JPEG_END = b"\xff\xd9"  # the end-of-image marker


def plain_jpeg_bytes(image, path):
    """The bytes of ``path`` as a uint8 tensor when ``image`` (its PIL image, opened lazily) is a plain JPEG, else
    None."""
    if image.format != "JPEG" or image.mode not in _PLAIN_JPEG_MODES or image.info.get("progressive"):
        return None
    with open(path, "rb") as file:
        data = file.read()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data.endswith(_JPEG_END) else None


def decode_jpeg(data, device):
    """torchvision's decode_jpeg of one tensor of JPEG bytes, or of a list of them (one call on CUDA), as RGB."""
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its image codecs in favour of TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg as torchvision_decode_jpeg
        return torchvision_decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def decode_with_pil(data, path):
    """The JPEG bytes ``data`` of ``path`` decoded by PIL; an UnreadableImage naming ``path`` if it cannot."""
    with open_image(path, data.numpy().tobytes()) as image:
        return rgb_tensor(image)


def rgb_tensor(image):
    return functional.pil_to_tensor(rgb_image(image))


def read_pixels(path):
    """The uint8 RGB pixels of the image file ``path``; UnreadableImage (naming it) when it cannot be read."""
    with open_image(path) as image:
        data = plain_jpeg_bytes(image, path)
        if data is None:
            return rgb_tensor(image)
    try:
        return decode_jpeg(data, "cpu")
    except RuntimeError:  # a JPEG variant libjpeg-turbo rejects through torchvision: PIL, which names a broken file
        return decode_with_pil(data, path)


def reads_pixels(transform):
    """Whether ``transform`` turns a PIL image into a tensor before anything else (``image_transforms.crop_and_flip_pixels``),
    so that it can take the decoded pixels of ``read_pixels`` instead (same result, a faster decoder)."""
    steps = getattr(transform, "transforms", None)
    return bool(steps) and type(steps[0]).__name__ == "PILToTensor" and type(steps[0]).__module__.startswith(
        "torchvision.transforms.v2")


class PixelImageList(ImageList):
    """An ImageList whose transform takes the uint8 pixels of ``read_pixels`` (``reads_pixels``)."""

    def load(self, path):
        return self.transform(read_pixels(path))


def image_list(items, transform, unreadable="raise"):
    """The ImageList of (path, label) ``items`` for ``transform``: a PixelImageList where it ``reads_pixels``."""
    return (PixelImageList if reads_pixels(transform) else ImageList)(items, transform, unreadable)

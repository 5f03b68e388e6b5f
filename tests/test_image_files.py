"""Image files read as uint8 pixels (clipood_plugin.image_files): plain JPEGs through torchvision's decoder, every
other file through PIL, each against PIL's own decoding of the file (the CPU path's reference)."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from clipood_plugin.image_transforms import crop_and_flip_pixels
from clipood_plugin.data import DataError, ImageList
from clipood_plugin.image_files import PixelImageList, read_pixels, reads_pixels


def _photo(width, height, seed=0):
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    return Image.fromarray(np.clip(np.asarray(coarse, dtype=np.float64) + rng.normal(0, 10, (height, width, 3)),
                                   0, 255).astype(np.uint8))


def _pil_pixels(path):
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root, photo = tmp_path_factory.mktemp("files"), _photo(53, 41)
    photo.save(root / "baseline.jpg", quality=90)
    photo.convert("L").save(root / "gray.jpg", quality=90)
    photo.convert("CMYK").save(root / "cmyk.jpg", quality=90)
    photo.save(root / "progressive.jpg", quality=90, progressive=True)
    photo.save(root / "photo.png")
    return root


@pytest.mark.parametrize("name", ["baseline.jpg", "gray.jpg", "cmyk.jpg", "progressive.jpg", "photo.png"])
def test_every_kind_of_file_gives_pils_pixels(files, name):
    pixels = read_pixels(str(files / name))
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 41, 53)
    # libjpeg-turbo behind both decoders: the same pixels, up to a level where their builds round differently
    assert (pixels.int() - _pil_pixels(files / name).int()).abs().max() <= 1


def test_a_truncated_jpeg_is_named_as_unreadable(files, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((files / "baseline.jpg").read_bytes()[:-200])
    with pytest.raises(DataError, match="broken.jpg"):
        read_pixels(str(broken))


def test_a_pixel_list_is_the_pil_list_for_a_transform_that_starts_with_pil_to_tensor(files):
    transform = crop_and_flip_pixels((24, 24), (0.7, 1.0), (3 / 4, 4 / 3), transforms.InterpolationMode.BICUBIC, 0.5)
    assert reads_pixels(transform) and not reads_pixels(transforms.Compose([transforms.PILToTensor()]))
    items = [(str(files / name), i) for i, name in enumerate(["baseline.jpg", "gray.jpg", "photo.png"])]
    for index in [(0, 3), (1, 4), (2, 5)]:
        from_pixels, from_pil = PixelImageList(items, transform)[index][0], ImageList(items, transform)[index][0]
        assert from_pixels.dtype == torch.uint8 and (from_pixels.int() - from_pil.int()).abs().max() <= 1

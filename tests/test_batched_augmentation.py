"""The batched device augmentation (clipood_plugin.crop_resize, DeviceAugmentation.augment) against independent
formulations: the per-image path it replaced (F.interpolate on each crop), PIL's crop + resize on the same boxes,
the resize weights' own properties, and torchvision's RandomResizedCrop draws written out."""
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision import transforms

from clipood_plugin import CLIP_MEAN, CLIP_STD
from clipood_plugin.crop_resize import crop_resize_flip, padded, resize_weights
from clipood_plugin.device_decoding import DeviceAugmentation, EncodedBatch, EncodedImageList

SIZES = [(61, 45), (130, 70), (48, 200), (97, 97), (40, 41), (150, 120)]  # (height, width)
PIL_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def _photos(sizes, seed=0):
    """Photo-like uint8 images [3, h, w]: smooth color fields plus grain (full-range noise would exaggerate
    PIL's 8-bit rounding of its intermediate pass)."""
    rng, images = np.random.default_rng(seed), []
    for height, width in sizes:
        coarse = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
        pixels = np.clip(np.asarray(coarse, dtype=np.float64) + rng.normal(0, 8, (height, width, 3)), 0, 255)
        images.append(torch.from_numpy(pixels.astype(np.uint8)).permute(2, 0, 1).contiguous())
    return images


def _boxes(sizes, seed=1):
    """A random crop box (top, left, height, width) inside each image: down- and upscaled to 32 px alike."""
    generator, boxes = torch.Generator().manual_seed(seed), []
    for height, width in sizes:
        box_height = int(torch.randint(8, height + 1, (1,), generator=generator))
        box_width = int(torch.randint(8, width + 1, (1,), generator=generator))
        top = int(torch.randint(0, height - box_height + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - box_width + 1, (1,), generator=generator))
        boxes.append((top, left, box_height, box_width))
    return torch.tensor(boxes)


FLIPS = torch.tensor([False, True, True, False, True, False])


def _per_image(images, boxes, flips, size, mode):
    """The per-image device path this replaced: each crop resized alone by F.interpolate, then flipped."""
    out = []
    for image, (top, left, height, width), flip in zip(images, boxes.tolist(), flips.tolist()):
        crop = image[None, :, top:top + height, left:left + width].float()
        resized = F.interpolate(crop, size=size, mode=mode, antialias=mode != "nearest",
                                **({} if mode == "nearest" else {"align_corners": False}))
        out.append(resized.flip(-1) if flip else resized)
    return torch.cat(out)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
def test_the_batch_is_the_per_image_path_to_a_thousandth_of_a_gray_level(mode, size):
    images, boxes = _photos(SIZES), _boxes(SIZES)
    batched = crop_resize_flip(padded(images), boxes, FLIPS, size, mode)
    assert (batched - _per_image(images, boxes, FLIPS, size, mode)).abs().max() <= 1e-3


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_eight_bit_output_is_pils_crop_and_resize_of_the_same_boxes(mode):
    """PIL rounds its horizontal pass to 8 bits before the vertical one, and its weights are fixed point: a few
    levels at most apart, a fraction of a level on average."""
    transform = transforms.Compose([transforms.RandomResizedCrop(32, interpolation=transforms.InterpolationMode(mode)),
                                    transforms.RandomHorizontalFlip(), transforms.PILToTensor()])
    images, boxes = _photos(SIZES), _boxes(SIZES)
    got = DeviceAugmentation(transform).augment(images, boxes, FLIPS)
    expected = []
    for image, (top, left, height, width), flip in zip(images, boxes.tolist(), FLIPS.tolist()):
        picture = Image.fromarray(image.permute(1, 2, 0).numpy()).crop((left, top, left + width, top + height))
        picture = picture.resize((32, 32), PIL_FILTERS[mode])
        if flip:
            picture = picture.transpose(Image.FLIP_LEFT_RIGHT)
        expected.append(torch.from_numpy(np.array(picture)).permute(2, 0, 1))
    expected = torch.stack(expected)
    assert got.dtype == torch.uint8 and got.shape == expected.shape
    difference = (got.float() - expected.float()).abs()
    assert difference.max() <= 3 and difference.mean() <= 0.3


def test_float_output_is_totensor_then_normalize_of_the_resized_pixels():
    transform = transforms.Compose([transforms.RandomResizedCrop(32), transforms.ToTensor(),
                                    transforms.Normalize(CLIP_MEAN, CLIP_STD)])
    images, boxes, no_flips = _photos(SIZES), _boxes(SIZES), torch.zeros(len(SIZES), dtype=torch.bool)
    got = DeviceAugmentation(transform).augment(images, boxes, no_flips)
    pixels = _per_image(images, boxes, no_flips, (32, 32), "bilinear").clamp(0, 255) / 255
    expected = (pixels - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    assert got.dtype == torch.float32 and torch.allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear", "nearest"])
def test_resize_weights_sum_to_one_stay_inside_the_box_and_the_flip_reverses_them(mode):
    start, length = torch.tensor([0, 5, 17, 3]), torch.tensor([50, 9, 30, 64])
    weights = resize_weights(start, length, 20, 70, mode)
    assert weights.shape == (4, 20, 70)
    assert torch.allclose(weights.sum(-1), torch.ones(4, 20), atol=1e-6)
    position = torch.arange(70).view(1, 1, -1)
    outside = (position < start.view(-1, 1, 1)) | (position >= (start + length).view(-1, 1, 1))
    assert not weights.masked_select(outside.expand_as(weights)).any()
    image = torch.rand(1, 1, 10, 70)
    boxes = torch.stack([torch.zeros(4, dtype=torch.long), start, torch.full((4,), 10), length], 1)
    plain = crop_resize_flip(image.expand(4, -1, -1, -1), boxes, torch.zeros(4, dtype=torch.bool), (10, 20), mode)
    mirrored = crop_resize_flip(image.expand(4, -1, -1, -1), boxes, torch.ones(4, dtype=torch.bool), (10, 20), mode)
    assert torch.equal(mirrored, plain.flip(-1))


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_the_number_of_operations_does_not_grow_with_the_batch():
    transform = transforms.Compose([transforms.RandomResizedCrop(32), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(CLIP_MEAN, CLIP_STD)])
    augmentation, counts = DeviceAugmentation(transform), []
    for batch in (2, 6):
        images, boxes = _photos(SIZES[:batch]), _boxes(SIZES[:batch])
        with _OpCounter() as counter:
            augmentation.augment(images, boxes, FLIPS[:batch])
        counts.append(counter.calls)
    assert counts[0] == counts[1]


def _torchvision_random_resized_crop(width, height, scale, ratio):
    """torchvision's RandomResizedCrop.get_params written out: ten tries of an area and a log-uniform aspect
    ratio, then the center crop clamped to the ratio range."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect_ratio = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1]).item())
        w, h = int(round(math.sqrt(target_area * aspect_ratio))), int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = torch.randint(0, height - h + 1, size=(1,)).item()
            left = torch.randint(0, width - w + 1, size=(1,)).item()
            return top, left, h, w
    if width / height < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif width / height > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize("scale", [(0.7, 1.0), (0.08, 1.0)])
def test_crop_draws_are_torchvisions_random_resized_crop_with_its_tries_and_fallback(scale):
    transform = transforms.Compose([transforms.RandomResizedCrop(32, scale=scale), transforms.RandomHorizontalFlip(),
                                    transforms.PILToTensor()])
    augmentation = DeviceAugmentation(transform)
    fallbacks = 0
    for seed, (width, height) in enumerate([(64, 48), (300, 20), (20, 300), (50, 50), (1000, 3)] * 20):
        image = Image.new("RGB", (width, height))
        torch.manual_seed(seed)
        box, flip = augmentation.draw(image)
        torch.manual_seed(seed)
        expected = _torchvision_random_resized_crop(width, height, scale, (3 / 4, 4 / 3))
        assert box == expected and flip == bool(torch.rand(1) < 0.5)
        fallbacks += box[0] == (height - box[2]) // 2 and box[1] == (width - box[3]) // 2 and width / height > 4 / 3
    assert fallbacks  # the thin images take the fallback path


def test_a_progressive_jpeg_is_decoded_by_pil_in_the_loader(tmp_path):
    photo = Image.fromarray(_photos([(40, 50)])[0].permute(1, 2, 0).numpy())
    photo.save(tmp_path / "progressive.jpg", progressive=True, quality=90)
    photo.save(tmp_path / "baseline.jpg", quality=90)
    transform = transforms.Compose([transforms.RandomResizedCrop(32), transforms.PILToTensor()])
    dataset = EncodedImageList([(str(tmp_path / "progressive.jpg"), 0), (str(tmp_path / "baseline.jpg"), 1)],
                               DeviceAugmentation(transform))
    batch = EncodedBatch.collate([dataset[(0, 5)], dataset[(1, 5)]])
    assert batch.encoded == [False, True]
    assert torch.equal(batch.payloads[0], torch.from_numpy(np.array(Image.open(io.BytesIO(
        (tmp_path / "progressive.jpg").read_bytes())).convert("RGB"))).permute(2, 0, 1))


def test_the_loader_and_the_device_give_the_same_uint8_crops(tmp_path):
    """`clipood train`'s training transform (image_transforms.crop_and_flip_pixels, uint8) decoded in the loaders and on
    the device: the same crops and flips, pixels within PIL's bounds of each other."""
    from clipood_plugin.image_transforms import crop_and_flip_pixels
    from clipood_plugin.batch_stream import training_batches

    items = []
    for i, image in enumerate(_photos(SIZES)):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path, quality=90)
        items.append((str(path), i % 2))
    transform = crop_and_flip_pixels((32, 32), (0.7, 1.0), (3 / 4, 4 / 3), transforms.InterpolationMode.BICUBIC, 0.5)
    streams = [training_batches([items[:3], items[3:]], transform, 2, seed=5, workers=0, decode=decode, device="cpu")
               for decode in ("cpu", "device")]
    for _ in range(3):
        (loader_images, loader_labels), (device_images, device_labels) = next(streams[0]), next(streams[1])
        assert loader_images.dtype == device_images.dtype == torch.uint8 and torch.equal(loader_labels, device_labels)
        difference = (loader_images.float() - device_images.float()).abs()
        assert difference.max() <= 3 and difference.mean() <= 0.3


def test_a_batch_that_would_pad_past_the_limit_is_resized_in_parts_with_the_same_result(monkeypatch):
    from clipood_plugin import crop_resize

    images, boxes = _photos(SIZES), _boxes(SIZES)
    whole = crop_resize.crop_resize_flip_images(images, boxes, FLIPS, (32, 32), "bicubic")
    monkeypatch.setattr(crop_resize, "MAX_PADDED_ELEMENTS", 3 * 130 * 200)  # two images of these sizes at most
    calls = []
    monkeypatch.setattr(crop_resize, "padded", lambda part: calls.append(len(part)) or padded(part))
    parts = crop_resize.crop_resize_flip_images(images, boxes, FLIPS, (32, 32), "bicubic")
    assert torch.allclose(parts, whole, atol=1e-4)  # other padding: the same sums, perhaps in another order
    assert len(calls) > 1 and sum(calls) == len(images) and max(calls) <= 2

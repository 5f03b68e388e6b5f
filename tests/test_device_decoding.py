"""Decoding and augmenting on the device (here the CPU device: the same code as on CUDA, where nvJPEG decodes)
gives what torchvision's PIL transform gives for the same augmentation seed."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from clipood_plugin import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from clipood_plugin import device_decoding, image_files
from clipood_plugin.data import DataError, ImageList
from clipood_plugin.device_decoding import DeviceAugmentation, EncodedBatch, EncodedImageList
from clipood_plugin.batch_stream import training_batches

PAPER_TRANSFORM = transforms.Compose([  # the paper's augmentation, as load_clip builds it for a 32 px model
    transforms.RandomResizedCrop(32, scale=(0.7, 1.0), interpolation=transforms.InterpolationMode.BICUBIC),
    transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(CLIP_MEAN, CLIP_STD)])
DASSL_LIKE = transforms.Compose([  # Dassl's build_transform: size as a list, other scale and normalization
    transforms.RandomResizedCrop([40, 40], scale=(0.08, 1.0), interpolation=transforms.InterpolationMode.BILINEAR),
    transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _photo(rng, width, height):
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    grain = rng.normal(0, 10, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(coarse, dtype=np.float64) + grain, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Files of every kind the device path meets: RGB and grayscale JPEGs (decoded on the device), a CMYK
    JPEG and a PNG (decoded by PIL in the loader), in several sizes."""
    root, rng = tmp_path_factory.mktemp("images"), np.random.default_rng(0)
    items = []
    for i in range(8):
        photo = _photo(rng, 60 + 9 * i, 45 + 13 * i)
        path, image = root / f"rgb{i}.jpg", photo
        if i == 5:
            path, image = root / "gray.jpg", photo.convert("L")
        elif i == 6:
            path, image = root / "cmyk.jpg", photo.convert("CMYK")
        elif i == 7:
            path = root / "photo.png"
        image.save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
        items.append((str(path), i % 3))
    return items


def _seeded_indices(items):
    return [(i, 7919 * i + 3) for i in range(len(items))]


def _in_pixel_levels(difference, transform):
    return difference * torch.tensor(transform.transforms[-1].std).view(1, 3, 1, 1) * 255


@pytest.mark.parametrize("transform", [PAPER_TRANSFORM, DASSL_LIKE], ids=["paper", "dassl-like"])
def test_device_pipeline_matches_the_pil_transform_for_the_same_seed(images, transform):
    indices = _seeded_indices(images)
    expected = torch.stack([ImageList(images, transform)[i][0] for i in indices])
    augmentation = DeviceAugmentation(transform)
    batch = EncodedBatch.collate([EncodedImageList(images, augmentation)[i] for i in indices])
    assert batch.encoded == [True] * 6 + [False, False]  # CMYK JPEG and PNG: decoded by PIL in the loader
    assert batch.flips.any() and not batch.flips.all()
    got = augmentation(batch, "cpu")
    assert got.shape == expected.shape and got.dtype == torch.float32
    levels = _in_pixel_levels((got - expected).abs(), transform)
    # same crop and flip; PIL rounds its resized pixels to 8 bits, the device path keeps them in float
    assert levels.max() <= 2.0 and levels.mean() <= 0.5


def test_batches_from_several_loaders_concatenate_in_order(images):
    augmentation = DeviceAugmentation(PAPER_TRANSFORM)
    dataset, indices = EncodedImageList(images, augmentation), _seeded_indices(images)
    whole = EncodedBatch.collate([dataset[i] for i in indices])
    parts = EncodedBatch.cat([EncodedBatch.collate([dataset[i] for i in indices[:3]]),
                              EncodedBatch.collate([dataset[i] for i in indices[3:]])])
    assert torch.equal(augmentation(whole, "cpu"), augmentation(parts, "cpu"))
    assert torch.equal(whole.labels, parts.labels) and whole.paths == parts.paths


def _rejecting_decoder(data, device):
    raise RuntimeError("nvjpeg: unsupported sampling")


def test_a_jpeg_the_device_decoder_rejects_is_decoded_by_pil(images, monkeypatch):
    augmentation = DeviceAugmentation(PAPER_TRANSFORM)
    indices = _seeded_indices(images)
    batch = EncodedBatch.collate([EncodedImageList(images, augmentation)[i] for i in indices])
    expected = augmentation(batch, "cpu")
    monkeypatch.setattr(image_files, "decode_jpeg", _rejecting_decoder)
    with pytest.warns(UserWarning, match="unsupported sampling"):
        assert torch.equal(augmentation(batch, "cpu"), expected)


def test_a_truncated_jpeg_is_found_in_the_loader_process_and_named_or_replaced(images, tmp_path):
    broken = tmp_path / "broken.jpg"
    Image.open(images[0][0]).save(broken)
    broken.write_bytes(broken.read_bytes()[:-300])  # the header survives, the end of the image data does not
    augmentation = DeviceAugmentation(PAPER_TRANSFORM)
    with pytest.raises(DataError, match="broken.jpg"):
        EncodedImageList([(str(broken), 0)], augmentation)[0]
    replacing = EncodedImageList([(str(broken), 0), images[1]], augmentation, unreadable="replace")
    batch = EncodedBatch.collate([replacing[(0, 11)]])
    assert batch.paths == [images[1][0]] and batch.labels.tolist() == [images[1][1]]
    assert [path for path, _ in batch.skipped] == [str(broken)]
    alone = EncodedBatch.collate([EncodedImageList([images[1]], augmentation)[(0, 11)]])
    assert torch.equal(augmentation(batch, "cpu"), augmentation(alone, "cpu"))  # same seed, same crop


@pytest.mark.parametrize("transform, named", [
    (transforms.Compose([transforms.RandomResizedCrop(32), transforms.ColorJitter(0.3), transforms.ToTensor()]),
     "ColorJitter"),
    (transforms.Compose([transforms.Resize(32), transforms.ToTensor()]), "Resize"),
    (transforms.Compose([transforms.RandomResizedCrop(32, interpolation=transforms.InterpolationMode.LANCZOS),
                         transforms.ToTensor()]), "lanczos"),
])
def test_transforms_the_device_cannot_run_are_refused_by_name(transform, named):
    with pytest.raises(ValueError, match=named):
        DeviceAugmentation(transform)


def test_a_torchvision_without_batched_jpeg_decoding_is_named(monkeypatch):
    import torchvision

    monkeypatch.setattr(torchvision, "__version__", "0.18.1+cu121")
    with pytest.raises(ValueError, match="torchvision 0.18.1"):
        DeviceAugmentation(PAPER_TRANSFORM)


def test_training_batches_decoded_on_the_device_are_the_cpu_batches(images):
    """The training loop's stream: same images per step (same data order and per-item seeds) either way."""
    per_domain = [images[:4], images[4:]]
    streams = {decode: training_batches(per_domain, PAPER_TRANSFORM, batch_size=2, seed=3, workers=0, start_step=1,
                                        decode=decode, device="cpu") for decode in ("cpu", "device")}
    for _ in range(3):
        (cpu_images, cpu_labels), (device_images, device_labels) = next(streams["cpu"]), next(streams["device"])
        assert torch.equal(cpu_labels, device_labels)
        assert _in_pixel_levels((cpu_images - device_images).abs(), PAPER_TRANSFORM).max() <= 2.0


def test_decoded_ahead_yields_every_batch_in_order_then_ends_and_passes_errors_on(images):
    augmentation = DeviceAugmentation(PAPER_TRANSFORM)
    dataset, indices = EncodedImageList(images, augmentation), _seeded_indices(images)
    batches = [EncodedBatch.collate([dataset[i]]) for i in indices]
    decoded = list(device_decoding.decoded_ahead(iter(batches), augmentation, "cpu", depth=2))
    assert len(decoded) == len(batches)
    for (images_, labels), batch in zip(decoded, batches):
        assert torch.equal(images_, augmentation(batch, "cpu")) and torch.equal(labels, batch.labels)

    garbage = batches[0]._replace(payloads=[torch.zeros(10, dtype=torch.uint8)], encoded=[True])
    ahead = device_decoding.decoded_ahead(iter([batches[0], garbage]), augmentation, "cpu", depth=0)
    next(ahead)
    with pytest.warns(UserWarning), pytest.raises(DataError, match=garbage.paths[0]):  # raised in the thread
        next(ahead)


def test_decode_auto_is_the_device_on_cuda_where_the_transform_allows_and_the_loaders_elsewhere():
    """The CUDA default chosen from the H200 measurements (docs/benchmarks.md: device decoding 25% faster end to
    end): auto decodes on a CUDA device, in the loader processes on a CPU, and falls back to them for a transform
    the device cannot run, which "device" refuses instead. (No CUDA is needed to choose.)"""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    jitter = transforms.Compose([transforms.RandomResizedCrop(32), transforms.ColorJitter(0.3), transforms.ToTensor()])
    assert isinstance(device_decoding.device_augmentation("auto", PAPER_TRANSFORM, cuda), DeviceAugmentation)
    assert device_decoding.device_augmentation("auto", PAPER_TRANSFORM, cpu) is None
    assert device_decoding.device_augmentation("auto", jitter, cuda) is None
    assert device_decoding.device_augmentation("cpu", PAPER_TRANSFORM, cuda) is None
    assert isinstance(device_decoding.device_augmentation("device", PAPER_TRANSFORM, cpu), DeviceAugmentation)
    with pytest.raises(ValueError, match="ColorJitter"):
        device_decoding.device_augmentation("device", jitter, cuda)

"""JPEG decoding and augmentation on the training device (nvJPEG on CUDA), in batches.

On a fast GPU the CPU cannot decode and crop JPEGs as fast as CLIPood trains. Here the torchvision
training transform (RandomResizedCrop, RandomHorizontalFlip, ToTensor, Normalize: the paper's
augmentation) is split in two: the data loader processes read the file bytes and draw the random crop and
flip exactly as the transform would (same generator calls, so the same seed gives the same crop), and the
device decodes the whole batch at once and does the pixel work. Files that are not plain RGB or grayscale
JPEGs (PNG, CMYK JPEG, ...) are decoded by PIL in the loader process, as on the CPU path, and so are JPEGs
whose data does not end with the end-of-image marker (a truncated file: PIL then finds it unreadable, and
the ImageList's policy for unreadable images applies, as on the CPU path).
"""
import collections
import concurrent.futures
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torchvision import transforms

from .data import ImageList, open_image, rgb_image

_INTERPOLATION_MODES = {transforms.InterpolationMode.BICUBIC: "bicubic",
                        transforms.InterpolationMode.BILINEAR: "bilinear",
                        transforms.InterpolationMode.NEAREST: "nearest"}
_DEVICE_JPEG_MODES = ("RGB", "L")
_JPEG_END = b"\xff\xd9"  # the end-of-image marker
_SUPPORTED_STEPS = ("RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize")  # in this order


class EncodedBatch(NamedTuple):
    """What the loader processes hand over: per image either the JPEG bytes (``encoded``) or decoded uint8
    pixels [3, H, W], and the crop box (top, left, height, width) and flip drawn for it; ``skipped`` holds
    the (path, reason) of the unreadable files the ImageList passed over."""
    payloads: list
    encoded: list
    boxes: torch.Tensor  # [B, 4] int64
    flips: torch.Tensor  # [B] bool
    labels: torch.Tensor
    paths: list
    skipped: list

    @classmethod
    def collate(cls, samples):
        """Batch the items of an EncodedImageList (whose unreadable policy is "raise" or "replace")."""
        items, labels, skipped = zip(*samples)
        payloads, encoded, boxes, flips, paths = zip(*items)
        return cls(list(payloads), list(encoded), torch.tensor(boxes, dtype=torch.int64),
                   torch.tensor(flips, dtype=torch.bool), torch.tensor(labels, dtype=torch.int64), list(paths),
                   [entry for entries in skipped for entry in entries])

    @classmethod
    def cat(cls, batches):
        return cls([p for b in batches for p in b.payloads], [e for b in batches for e in b.encoded],
                   torch.cat([b.boxes for b in batches]), torch.cat([b.flips for b in batches]),
                   torch.cat([b.labels for b in batches]), [p for b in batches for p in b.paths],
                   [s for b in batches for s in b.skipped])


def device_augmentation(decode, transform, device):
    """Where training images are decoded: the DeviceAugmentation that finishes ``transform`` on ``device``, or
    None for the loader processes (PIL). "auto" decodes on a CUDA device when ``transform`` is one it runs
    (faster end to end there: 641 against 515 images/s for ViT-B-16 at batch 36 on an H200,
    docs/benchmarks.md), else in the loaders; "device" insists, raising ValueError for a transform it cannot run."""
    device = torch.device(device)
    if decode == "cpu" or (decode == "auto" and device.type != "cuda"):
        return None
    try:
        return DeviceAugmentation(transform)
    except ValueError:
        if decode == "auto":
            return None
        raise


class DeviceAugmentation:
    """A torchvision training transform, run as: ``draw`` (loader process, per image) then ``__call__``
    (device, per batch). Accepts RandomResizedCrop, then optionally RandomHorizontalFlip, then ToTensor and
    optionally Normalize; anything else raises ValueError naming what is not supported."""

    def __init__(self, transform):
        _check_decoder()
        steps = list(transform.transforms) if isinstance(transform, transforms.Compose) else [transform]
        kinds = [type(step).__name__ for step in steps]
        if kinds != [k for k in _SUPPORTED_STEPS if k in kinds] or not {"RandomResizedCrop", "ToTensor"} <= set(kinds):
            raise ValueError(f"decoding on the device supports the transform {', '.join(_SUPPORTED_STEPS)} (flip and "
                             f"normalize optional); this one is {kinds}: decode on the CPU instead, or drop the "
                             "other augmentations")
        crop = steps[0]
        if crop.interpolation not in _INTERPOLATION_MODES:
            raise ValueError(f"decoding on the device supports {sorted(m.value for m in _INTERPOLATION_MODES)} "
                             f"interpolation, not {crop.interpolation.value}: decode on the CPU instead")
        self.crop = crop
        self.size = tuple(crop.size)  # (height, width)
        self.mode = _INTERPOLATION_MODES[crop.interpolation]
        self.antialias = bool(crop.antialias) and self.mode != "nearest"
        self.flip_p = steps[1].p if "RandomHorizontalFlip" in kinds else None
        normalize = steps[-1] if "Normalize" in kinds else None
        mean = torch.tensor(normalize.mean if normalize else (0.0, 0.0, 0.0), dtype=torch.float32)
        std = torch.tensor(normalize.std if normalize else (1.0, 1.0, 1.0), dtype=torch.float32)
        # ToTensor then Normalize in one affine map of the 0-255 pixels, (shift, scale) per device: copied
        # there once, since a copy from pageable memory would wait for the device's queued work every batch
        self._affine = {torch.device("cpu"): ((-mean / std).view(1, 3, 1, 1), (1.0 / (255.0 * std)).view(1, 3, 1, 1))}
        self._warned = False

    def draw(self, image):
        """(box, flip) for a PIL image (opened lazily: only its size is read), with the torch generator
        calls of the transform itself, in its order."""
        box = transforms.RandomResizedCrop.get_params(image, self.crop.scale, self.crop.ratio)
        flip = self.flip_p is not None and bool(torch.rand(1) < self.flip_p)
        return box, flip

    def __call__(self, batch: EncodedBatch, device):
        """Decode, crop, resize, flip and normalize a batch on ``device``: float32 [B, 3, H, W]."""
        device = torch.device(device)
        pixels = list(batch.payloads)
        jpegs = [i for i, encoded in enumerate(batch.encoded) if encoded]
        for i, image in zip(jpegs, self._decode([pixels[i] for i in jpegs], [batch.paths[i] for i in jpegs], device)):
            pixels[i] = image
        crops = []
        for image, (top, left, height, width) in zip(pixels, batch.boxes.tolist()):
            crop = image.to(device, non_blocking=True)[None, :, top:top + height, left:left + width].float()
            crops.append(F.interpolate(crop, size=self.size, mode=self.mode, antialias=self.antialias,
                                       **({} if self.mode == "nearest" else {"align_corners": False})))
        images = torch.cat(crops).clamp_(0, 255)  # bicubic overshoots; PIL's 8-bit result is clamped
        flips = batch.flips.to(device, non_blocking=True).view(-1, 1, 1, 1)
        images = torch.where(flips, images.flip(-1), images)
        if device not in self._affine:
            self._affine[device] = tuple(t.to(device) for t in self._affine[torch.device("cpu")])
        shift, scale = self._affine[device]
        return torch.addcmul(shift, images, scale)

    def _decode(self, data, paths, device):
        if not data:
            return []
        try:
            return _decode_jpeg(data, device)
        except RuntimeError as error:  # a JPEG variant the device decoder rejects: PIL, as on the CPU path
            if not self._warned:
                warnings.warn(f"decoding JPEGs on {device} failed ({error}); batches with such files are decoded "
                              "by PIL on the CPU", stacklevel=3)
                self._warned = True
            return [_decode_with_pil(d, path) for d, path in zip(data, paths)]


def _check_decoder():
    import torchvision

    version = tuple(int(part) for part in torchvision.__version__.split("+")[0].split(".")[:2])
    if version < (0, 19) or not hasattr(torchvision.io, "decode_jpeg"):
        raise ValueError(f"decoding on the device needs torchvision.io.decode_jpeg with batches (torchvision 0.19 "
                         f"or newer, up to the release that removes it); this is torchvision {torchvision.__version__}: "
                         "install such a torchvision, or decode on the CPU")


def _decode_jpeg(data, device):
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its image codecs in favour of TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def _decode_with_pil(data, path):
    with open_image(path, data.numpy().tobytes()) as image:
        return _rgb_tensor(image)


def _rgb_tensor(image):
    return transforms.functional.pil_to_tensor(rgb_image(image))


class EncodedImageList(ImageList):
    """An ImageList whose transform is a DeviceAugmentation: an item is ((payload, encoded, box, flip, path),
    label, skipped). Plain RGB and grayscale JPEGs that end with the end-of-image marker stay encoded (the
    file's bytes, decoded later on the device); other files are decoded here by PIL. Batch items with
    ``EncodedBatch.collate``."""

    def load(self, path):
        with open_image(path) as image:
            box, flip = self.transform.draw(image)
            if image.format == "JPEG" and image.mode in _DEVICE_JPEG_MODES:
                with open(path, "rb") as file:
                    data = file.read()
                if data.endswith(_JPEG_END):
                    return torch.frombuffer(bytearray(data), dtype=torch.uint8), True, box, flip, path
            return _rgb_tensor(image), False, box, flip, path


def decoded_ahead(batches, augmentation, device, depth=2):
    """(images on ``device``, labels) of each EncodedBatch of ``batches``, decoded by a thread up to ``depth``
    batches ahead, so that the host side of decoding (nvJPEG's CPU stages, kernel launches) overlaps the
    training step. ``batches`` is read in the calling thread: any random draws of a loader without worker
    processes stay in their usual order. The thread uses its own current stream, the default one, so the
    device runs its work in order with the training step's."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="clipood-decoding") as decoder:
        pending = collections.deque()
        for batch in batches:
            pending.append(decoder.submit(lambda b: (augmentation(b, device), b.labels), batch))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

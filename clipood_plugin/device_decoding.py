"""JPEG decoding and augmentation on the training device (nvJPEG on CUDA), a whole batch at a time.

On a fast GPU the CPU cannot decode and crop JPEGs as fast as CLIPood trains. Here the torchvision
training transform (RandomResizedCrop, RandomHorizontalFlip, then ToTensor and Normalize or PILToTensor: the
paper's augmentation) is split in two: the data loader processes read the file bytes and draw the random crop
and flip exactly as the transform would (same generator calls, so the same seed gives the same crop), and the
device decodes the whole batch in one call and crops, resizes, flips and normalizes it as one batch
(clipood_plugin.crop_resize), on a CUDA stream of its own one batch ahead of the training step. Files that are
not plain JPEGs (clipood_plugin.image_files: PNG, CMYK or progressive JPEG, a truncated file) are decoded by PIL
in the loader process, as on the CPU path.
"""
import collections
import concurrent.futures
import warnings
from typing import NamedTuple

import torch
from torchvision import transforms

from .image_transforms import pixel_normalization
from .crop_resize import crop_resize_flip_images
from . import image_files
from .data import ImageList, open_image

_INTERPOLATION_MODES = {transforms.InterpolationMode.BICUBIC: "bicubic",
                        transforms.InterpolationMode.BILINEAR: "bilinear",
                        transforms.InterpolationMode.NEAREST: "nearest"}
_SUPPORTED_ENDINGS = (("ToTensor",), ("ToTensor", "Normalize"), ("PILToTensor",))


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
    None for the loader processes (the CPU path). "auto" decodes on a CUDA device when ``transform`` is one it runs
    (faster end to end there: 641 against 515 images/s for ViT-B-16 at batch 36 on an H200,
    docs/benchmarks.md), else in the loaders; "device" insists, raising ValueError for a transform it cannot run.
    A ``transform`` that is already a DeviceAugmentation is used as it is."""
    device = torch.device(device)
    if decode == "cpu" or (decode == "auto" and device.type != "cuda"):
        return None
    if isinstance(transform, DeviceAugmentation):
        return transform
    try:
        return DeviceAugmentation(transform)
    except ValueError:
        if decode == "auto":
            return None
        raise


class DeviceAugmentation:
    """A torchvision training transform, run as: ``draw`` (loader process, per image) then ``__call__``
    (device, per batch). Accepts RandomResizedCrop (antialiased bicubic or bilinear, or nearest), then
    optionally RandomHorizontalFlip, then ToTensor and optionally Normalize (float32 out) or PILToTensor (uint8
    out); or PILToTensor first, then the crop and flip (uint8 out: ``image_transforms.crop_and_flip_pixels``). Anything
    else raises ValueError naming what is not supported."""

    def __init__(self, transform):
        _check_decoder()
        steps = list(getattr(transform, "transforms", [transform]))
        kinds = [type(step).__name__ for step in steps]
        pixels_first = kinds[:1] == ["PILToTensor"]
        steps, kinds = steps[pixels_first:], kinds[pixels_first:]
        flip = kinds[1:2] == ["RandomHorizontalFlip"]
        ending = tuple(kinds[1 + flip:])
        if kinds[:1] != ["RandomResizedCrop"] or (ending != () if pixels_first else ending not in _SUPPORTED_ENDINGS):
            raise ValueError("decoding on the device supports the transform RandomResizedCrop, RandomHorizontalFlip "
                             "(optional), then ToTensor and Normalize (optional) or PILToTensor; this one is "
                             f"{['PILToTensor'] * pixels_first + kinds}: decode on the CPU instead, or drop the other "
                             "augmentations")
        crop = steps[0]
        mode = _INTERPOLATION_MODES.get(crop.interpolation)
        if mode is None or (mode != "nearest" and not crop.antialias):
            raise ValueError("decoding on the device supports antialiased bicubic or bilinear, or nearest "
                             f"interpolation, not {crop.interpolation.value}{'' if crop.antialias else ' without antialias'}:"
                             " decode on the CPU instead")
        self.crop, self.mode, self.size = crop, mode, tuple(crop.size)  # size: (height, width)
        self.flip_p = steps[1].p if flip else None
        self.eight_bit = pixels_first or kinds[-1] == "PILToTensor"
        normalize = steps[-1] if kinds[-1] == "Normalize" else None
        # ToTensor then Normalize in one affine map of the 0-255 pixels, (shift, scale) per device: copied
        # there once, since a copy from pageable memory would wait for the device's queued work every batch
        self._affine = {torch.device("cpu"): pixel_normalization(normalize.mean if normalize else (0.0, 0.0, 0.0),
                                                                 normalize.std if normalize else (1.0, 1.0, 1.0))}
        self._warned = False

    def draw(self, image):
        """(box, flip) for a PIL image (opened lazily: only its size is read), with the torch generator
        calls of the transform itself, in its order."""
        box = transforms.RandomResizedCrop.get_params(image, self.crop.scale, self.crop.ratio)
        flip = self.flip_p is not None and bool(torch.rand(1) < self.flip_p)
        return box, flip

    def __call__(self, batch: EncodedBatch, device):
        """Decode a batch on ``device`` and ``augment`` it."""
        device = torch.device(device)
        pixels = list(batch.payloads)
        jpegs = [i for i, encoded in enumerate(batch.encoded) if encoded]
        for i, image in zip(jpegs, self._decode([pixels[i] for i in jpegs], [batch.paths[i] for i in jpegs], device)):
            pixels[i] = image
        for i in (i for i, encoded in enumerate(batch.encoded) if not encoded):  # decoded by PIL in the loaders
            pixels[i] = pixels[i].to(device, non_blocking=True)
        return self.augment(pixels, batch.boxes, batch.flips)

    def augment(self, images, boxes, flips):
        """Crop, resize, flip and normalize decoded uint8 images [3, h, w] (a list, on one device) as one batch:
        [B, 3, H, W] float32 normalized as the transform's Normalize, or uint8 for a transform ending in
        PILToTensor. As many operations for any batch size."""
        return self.finish(crop_resize_flip_images(images, boxes, flips, self.size, self.mode))

    def finish(self, resized):
        """Resized pixels [B, 3, H, W] (float, 0-255 scale) as the transform's last steps leave them."""
        device = resized.device
        resized = resized.clamp_(0, 255)  # bicubic overshoots; PIL's 8-bit result is clamped
        if self.eight_bit:
            return resized.round_().to(torch.uint8)
        if device not in self._affine:
            self._affine[device] = tuple(t.to(device) for t in self._affine[torch.device("cpu")])
        shift, scale = self._affine[device]
        return torch.addcmul(shift, resized, scale)

    def _decode(self, data, paths, device):
        if not data:
            return []
        try:
            return image_files.decode_jpeg(data, device)
        except RuntimeError as error:  # a JPEG variant the device decoder rejects: PIL, as on the CPU path
            if not self._warned:
                warnings.warn(f"decoding JPEGs on {device} failed ({error}); batches with such files are decoded "
                              "by PIL on the CPU", stacklevel=3)
                self._warned = True
            return [image_files.decode_with_pil(d, path).to(device) for d, path in zip(data, paths)]


def _check_decoder():
    import torchvision

    version = tuple(int(part) for part in torchvision.__version__.split("+")[0].split(".")[:2])
    if version < (0, 19) or not hasattr(torchvision.io, "decode_jpeg"):
        raise ValueError(f"decoding on the device needs torchvision.io.decode_jpeg with batches (torchvision 0.19 "
                         f"or newer, up to the release that removes it); this is torchvision {torchvision.__version__}: "
                         "install such a torchvision, or decode on the CPU")


class EncodedImageList(ImageList):
    """An ImageList whose transform is a DeviceAugmentation: an item is ((payload, encoded, box, flip, path),
    label, skipped). Plain JPEGs (image_files.plain_jpeg_bytes) stay encoded (the file's bytes, decoded later on
    the device); other files are decoded here by PIL. Batch items with ``EncodedBatch.collate``."""

    def load(self, path):
        with open_image(path) as image:
            box, flip = self.transform.draw(image)
            data = image_files.plain_jpeg_bytes(image, path)
            if data is not None:
                return data, True, box, flip, path
            return image_files.rgb_tensor(image), False, box, flip, path


def decoded_ahead(batches, augmentation, device, depth=2):
    """(images on ``device``, labels) of each EncodedBatch of ``batches``, decoded by a thread up to ``depth``
    batches ahead, so that the host side of decoding (nvJPEG's CPU stages, kernel launches) overlaps the
    training step. ``batches`` is read in the calling thread: any random draws of a loader without worker
    processes stay in their usual order. On CUDA the thread queues its kernels on a stream of its own, so they
    do not wait in line with the training step's; the step's stream waits for a batch's event before using
    it, and the images are marked as used there (``record_stream``) so that their memory is not reused early."""
    device = torch.device(device)
    side_stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def decode(batch):
        if side_stream is None:
            return augmentation(batch, device), None
        with torch.cuda.stream(side_stream):
            images = augmentation(batch, device)
            done = torch.cuda.Event()
            done.record(side_stream)
        return images, done

    def handed_over(future, labels):
        images, done = future.result()
        if done is not None:
            step_stream = torch.cuda.current_stream(device)
            step_stream.wait_event(done)
            images.record_stream(step_stream)
        return images, labels

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="clipood-decoding") as decoder:
        pending = collections.deque()
        for batch in batches:
            pending.append((decoder.submit(decode, batch), batch.labels))
            if len(pending) > depth:
                yield handed_over(*pending.popleft())
        while pending:
            yield handed_over(*pending.popleft())

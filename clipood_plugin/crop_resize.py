"""Crop, resize and horizontal flip of a whole batch of differently sized images as two batched matrix products.

A resize with torch's antialiased bicubic or bilinear interpolation (``F.interpolate(..., antialias=True)``,
PIL's filters) is separable: output row i is a weighted sum of input rows, with weights that depend only on
i, the input length and the output length. So crop + resize of image b is ``rows[b] @ image[b] @ cols[b].T``,
where ``rows[b]`` [out_h, H] holds the vertical weights of its crop box (zero outside the box) and ``cols[b]``
[out_w, W] the horizontal ones, reversed for a flipped image. Images zero-padded into one batch [B, C, H, W]
then take the same few kernels whatever the batch size (the host only reads each image's shape, to bound the
padding). The weights are those of ATen's ``_compute_indices_min_size_weights_aa`` (UpSampleKernel.cpp),
computed densely.
"""
import warnings

import torch

# half the filter's support at scale 1, and the filter (PIL's: bicubic with a = -0.5)
_FILTERS = {"bicubic": 2.0, "bilinear": 1.0}
MODES = (*_FILTERS, "nearest")
_BICUBIC_A = -0.5


def _filter(mode, x):
    x = x.abs()
    if mode == "bilinear":
        return (1 - x).clamp_min(0)
    a = _BICUBIC_A
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resize_weights(start, length, out_size, in_size, mode):
    """[B, out_size, in_size] float32: row i of image b weighs the input positions of output i when its span
    [start[b], start[b] + length[b]) is resized to ``out_size``; zero outside the span. ``mode``: "bicubic" or
    "bilinear" (antialiased, rows sum to 1) or "nearest" (F.interpolate's, one 1 per row)."""
    device = start.device
    start = start.to(torch.float32).view(-1, 1, 1)
    length = length.to(torch.float32).view(-1, 1, 1)
    out = torch.arange(out_size, device=device, dtype=torch.float32).view(1, -1, 1)
    local = torch.arange(in_size, device=device, dtype=torch.float32).view(1, 1, -1) - start
    scale = length / out_size
    if mode == "nearest":
        source = torch.minimum(torch.floor(out * scale), length - 1)
        return (local == source).to(torch.float32)
    if mode not in _FILTERS:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    downscaling = scale >= 1
    support = _FILTERS[mode] * torch.where(downscaling, scale, torch.ones_like(scale))
    inverse_scale = torch.where(downscaling, 1 / scale, torch.ones_like(scale))
    center = scale * (out + 0.5)
    first = torch.floor(center - support + 0.5).clamp_min(0)
    end = torch.minimum(torch.floor(center + support + 0.5), length)
    weights = _filter(mode, (local - center + 0.5) * inverse_scale) * ((local >= first) & (local < end))
    return weights / weights.sum(-1, keepdim=True)


# the most elements of one zero-padded float batch: a batch whose largest image would pad past it (one photo of
# 4000 x 3000 pads every image of the batch to that size) is cut into consecutive parts that stay under it
MAX_PADDED_ELEMENTS = 1 << 26  # 256 MiB of float32


def crop_resize_flip_images(images, boxes, flips, size, mode):
    """``crop_resize_flip`` of a list of [C, h, w] images (one device, any sizes): one padded batch, or a few
    consecutive ones where padding them all to the largest would exceed MAX_PADDED_ELEMENTS."""
    parts, start, height, width = [], 0, 0, 0
    for end, image in enumerate(images):
        height, width = max(height, image.shape[-2]), max(width, image.shape[-1])
        if end > start and (end + 1 - start) * image.shape[0] * height * width > MAX_PADDED_ELEMENTS:
            parts.append((start, end))
            start, height, width = end, image.shape[-2], image.shape[-1]
    parts.append((start, len(images)))
    resized = [crop_resize_flip(padded(images[i:j]), boxes[i:j], flips[i:j], size, mode) for i, j in parts]
    return resized[0] if len(resized) == 1 else torch.cat(resized)


def padded(images):
    """A list of [C, h, w] images (one device, any sizes) as one float32 batch [B, C, max h, max w], zero-padded
    at the bottom and right, in two kernels."""
    with warnings.catch_warnings():  # nested tensors of the strided layout are a "prototype": only this is used
        warnings.simplefilter("ignore", UserWarning)
        return torch.nested.to_padded_tensor(torch.nested.as_nested_tensor(images, dtype=torch.float32), 0.0)


def crop_resize_flip(pixels, boxes, flips, size, mode):
    """Crop ``boxes`` [B, 4] (top, left, height, width) out of ``pixels`` [B, C, H, W], resize each crop to
    ``size`` (height, width) with ``mode``, and mirror the images where ``flips`` [B] is true: [B, C, *size]
    float32, unclamped (bicubic overshoots the input's range)."""
    boxes = boxes.to(pixels.device)
    rows = resize_weights(boxes[:, 0], boxes[:, 2], size[0], pixels.shape[-2], mode)
    cols = resize_weights(boxes[:, 1], boxes[:, 3], size[1], pixels.shape[-1], mode)
    cols = torch.where(flips.to(pixels.device).view(-1, 1, 1), cols.flip(1), cols)
    return rows.unsqueeze(1) @ pixels @ cols.transpose(1, 2).unsqueeze(1)

"""A small generated multi-domain image dataset for `clipood demo`: shapes (the classes) drawn in
three styles (the domains), in the ROOT/<domain>/<class>/<image> layout."""
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circle", "square", "triangle", "star")
DOMAINS = ("photo", "painting", "sketch")
SIZE = 64


def _polygon(kind, cx, cy, r, angle):
    if kind == "square":
        corners, radii = 4, [r * 0.85] * 4
    elif kind == "triangle":
        corners, radii = 3, [r] * 3
    else:  # star
        corners, radii = 10, [r if i % 2 == 0 else r * 0.45 for i in range(10)]
    return [(cx + radii[i] * math.cos(angle + 2 * math.pi * i / corners),
             cy + radii[i] * math.sin(angle + 2 * math.pi * i / corners)) for i in range(corners)]


def draw_shape(kind, domain, rng):
    """One image of shape ``kind`` in the style of ``domain``."""
    background = (255, 255, 255) if domain == "sketch" else tuple(rng.randint(0, 90) for _ in range(3))
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    if domain == "painting":  # brush strokes behind the shape
        for _ in range(6):
            x, y = rng.randint(0, SIZE), rng.randint(0, SIZE)
            draw.line((x, y, x + rng.randint(-30, 30), y + rng.randint(-30, 30)),
                      fill=tuple(rng.randint(0, 255) for _ in range(3)), width=2)
    r = rng.uniform(14, 24)
    cx, cy = rng.uniform(r + 2, SIZE - r - 2), rng.uniform(r + 2, SIZE - r - 2)
    color = tuple(rng.randint(130, 255) for _ in range(3))
    fill, outline, width = (None, (0, 0, 0), 2) if domain == "sketch" else (color, None, 1)
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=width)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=fill, outline=outline,
                     width=width)
    if domain == "photo":
        image = image.filter(ImageFilter.GaussianBlur(0.6))
    return image


def make_demo_dataset(root, images_per_class=40, seed=0):
    """Write DOMAINS x CLASSES x images_per_class PNG files under root (skipped if already complete)."""
    root = Path(root)
    expected = len(DOMAINS) * len(CLASSES) * images_per_class
    if root.is_dir() and sum(1 for _ in root.glob("*/*/*.png")) == expected:
        return root
    rng = random.Random(seed)
    for domain in DOMAINS:
        for kind in CLASSES:
            folder = root / domain / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(images_per_class):
                draw_shape(kind, domain, rng).save(folder / f"{i:04d}.png")
    return root

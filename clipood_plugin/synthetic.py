"""A small generated multi-domain image dataset for `clipood demo` and README's recipes: shapes (the
classes) drawn in three styles (the domains), in the ROOT/<domain>/<class>/<image> layout.

    python -m clipood_plugin.synthetic OUT [--images-per-class N] [--domains photo painting sketch] [--seed S]

Domains other than photo, painting and sketch are drawn in a plain style (filled shape, dark background),
so the same command writes a tree with another framework's domain names (e.g. PACS's for Dassl).
"""
import argparse
import math
import random
import sys
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


def make_demo_dataset(root, images_per_class=40, seed=0, domains=DOMAINS):
    """Write domains x CLASSES x images_per_class PNG files under root (skipped if already complete)."""
    root = Path(root)
    expected = len(domains) * len(CLASSES) * images_per_class
    if root.is_dir() and sum(1 for _ in root.glob("*/*/*.png")) == expected:
        return root
    rng = random.Random(seed)
    for domain in domains:
        for kind in CLASSES:
            folder = root / domain / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(images_per_class):
                draw_shape(kind, domain, rng).save(folder / f"{i:04d}.png")
    return root


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m clipood_plugin.synthetic",
                                     description="write the generated shapes dataset as OUT/<domain>/<class>/<i>.png")
    parser.add_argument("out", help="the folder to write (its files are kept when they are already complete)")
    parser.add_argument("--images-per-class", type=int, default=40, help="per domain and class (default: 40)")
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS),
                        help=f"domain folder names (default: {' '.join(DOMAINS)}); others are drawn plain")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the drawings (default: 0)")
    args = parser.parse_args(argv)
    if args.images_per_class < 1:
        parser.error("--images-per-class must be at least 1")
    root = make_demo_dataset(args.out, args.images_per_class, args.seed, tuple(args.domains))
    print(f"wrote {len(args.domains)} domains x {len(CLASSES)} classes x {args.images_per_class} images to {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

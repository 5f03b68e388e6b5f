"""What README's recipes run on offline: a small generated multi-domain image dataset for `clipood demo`,
shapes (the classes) drawn in three styles (the domains) in the ROOT/<domain>/<class>/<image> layout, and
"pretrained" weights for the tiny model.

    python -m clipood_plugin.synthetic OUT [--images-per-class N] [--domains photo painting sketch] [--seed S]
    python -m clipood_plugin.synthetic tiny-weights FILE [--seed S]

Domains other than photo, painting and sketch are drawn in a plain style (filled shape, dark background),
so the same command writes a tree with another framework's domain names (e.g. PACS's for Dassl).

``tiny-weights`` saves a random init of clipood-tiny as an open_clip state dict: trained from it with
``--pretrained FILE``, a run can rebuild its starting weights, which WiSE-FT (theta_0) and `clipood export`
(the text tower) need; a run from ``--pretrained none`` cannot.
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


def save_tiny_weights(path, seed=0):
    """Write clipood-tiny's random init under torch seed ``seed`` to ``path`` as an open_clip state dict (what
    ``pretrained=FILE`` loads). An existing file is kept when it holds exactly these weights, else refused."""
    import torch

    from .backbone import load_clip
    from .files import load_checkpoint, save_tensors
    from .settings import TINY_MODEL, DataError

    torch.manual_seed(seed)
    weights = load_clip(TINY_MODEL, pretrained=None)[0].state_dict()
    if Path(path).exists():
        kept = load_checkpoint(path, fix="remove it or choose another FILE") if Path(path).is_file() else None
        if not (isinstance(kept, dict) and kept.keys() == weights.keys()
                and all(torch.equal(kept[name], weights[name]) for name in weights)):
            raise DataError(f"{path} exists and holds other data than the {TINY_MODEL} weights of seed {seed}: "
                            "remove it or choose another FILE")
        return False
    save_tensors(weights, path)
    return True


def _tiny_weights_main(argv):
    from .settings import TINY_MODEL, DataError

    parser = argparse.ArgumentParser(prog="python -m clipood_plugin.synthetic tiny-weights",
                                     description=f"save a random init of {TINY_MODEL} as weights for --pretrained "
                                                 "FILE (a run from them can rebuild them: WiSE-FT, export)")
    parser.add_argument("file", help="the weights file to write (kept if it already holds these weights)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of the random init (default: 0)")
    args = parser.parse_args(argv)
    try:
        written = save_tiny_weights(args.file, args.seed)
    except DataError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    print(f"{'wrote' if written else 'kept'} {args.file}: {TINY_MODEL} random init, seed {args.seed}")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["tiny-weights"]:
        return _tiny_weights_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m clipood_plugin.synthetic",
                                     description="write the generated shapes dataset as OUT/<domain>/<class>/<i>.png")
    parser.add_argument("out", help="the folder to write (its files are kept when they are already complete); "
                                    "`tiny-weights FILE` instead saves tiny-model weights (see its --help)")
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

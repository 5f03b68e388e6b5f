"""A small generated image dataset in DomainBed's PACS layout, for tests that run the real DomainBed."""
import torch
from PIL import Image

PACS_ENVIRONMENTS = ("art_painting", "cartoon", "photo", "sketch")


def write_pacs_tree(root, images_per_class, height, width):
    """ROOT/PACS/<environment>/<class>/<i>.png with random pixels (non-square sizes tell a crop from a squash)."""
    from domainbed_adapter.class_names import FOLDER_CLASS_NAMES
    generator = torch.Generator().manual_seed(0)
    for environment in PACS_ENVIRONMENTS:
        for name in FOLDER_CLASS_NAMES["PACS"]:
            folder = root / "PACS" / environment / name
            folder.mkdir(parents=True)
            for i in range(images_per_class):
                pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root

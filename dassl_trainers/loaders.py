"""Rebuilding Dassl's training loader with another sampling or dataset, everything else kept."""
import copy

from torch.utils.data import DataLoader

from clipood_plugin.image_transforms import uint8_transform
from clipood_plugin.device_decoding import EncodedBatch, EncodedImageList, decoded_ahead, device_augmentation


def loader_like(loader, **changes):
    """A DataLoader like ``loader``: its dataset, workers, collate, pinning and worker init, with ``changes``
    (sampling: ``batch_size`` + ``sampler``, or ``batch_sampler``; or another ``dataset`` and ``collate_fn``)."""
    settings = dict(dataset=loader.dataset, num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                    pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn)
    return DataLoader(**{**settings, **changes})


def with_uint8_images(loader):
    """Dassl's training loader with its images as uint8 pixels, which the learner normalizes on its device (a
    quarter of the bytes to copy): the transform's uint8 form (clipood_plugin.image_transforms.uint8_transform:
    a crop and flip alone run on the uint8 tensor, other PIL steps end in PILToTensor). A transform that works
    on the tensors after ToTensor (cutout, gaussian_noise, instance_norm) keeps its floats."""
    wrapper = loader.dataset  # Dassl's DatasetWrapper
    transform = uint8_transform(wrapper.transform)
    if transform is None:
        return loader
    wrapper = copy.copy(wrapper)
    wrapper.transform = transform
    return loader_like(loader, dataset=wrapper, batch_size=loader.batch_size, sampler=loader.sampler,
                       drop_last=loader.drop_last)


def leave_encoded(loader, decode, device):
    """Where TRAINER.CLIPOOD.DECODE has the training images decoded: (Dassl's loader, None) for the loader
    processes, else (the loader with its images left as JPEG bytes plus the crop and flip its transform draws
    (clipood_plugin.device_decoding), the DeviceAugmentation that finishes them on ``device``)."""
    wrapper = loader.dataset  # Dassl's DatasetWrapper: data_source (Datum items) and transform
    try:
        augmentation = device_augmentation(decode, wrapper.transform, device)
    except ValueError as error:
        raise ValueError(f"TRAINER.CLIPOOD.DECODE device: {error} (INPUT.TRANSFORMS [random_resized_crop, random_flip, "
                         "normalize] is what it runs; set TRAINER.CLIPOOD.DECODE cpu for other transforms)") from None
    if augmentation is None:
        return loader, None
    items = [(datum.impath, datum.label) for datum in wrapper.data_source]
    encoded = loader_like(loader, dataset=EncodedImageList(items, augmentation), collate_fn=EncodedBatch.collate,
                          batch_size=loader.batch_size, sampler=loader.sampler, drop_last=loader.drop_last,
                          pin_memory=False)  # nvJPEG does not read the JPEG bytes from pinned memory
    return encoded, augmentation


class DecodedOnDevice:
    """Iterates a loader of EncodedBatch as Dassl's batches {"img", "label"}, the images decoded and augmented
    on ``device`` ahead in a thread; as long as the loader."""

    def __init__(self, loader, augmentation, device):
        self.loader, self.augmentation, self.device = loader, augmentation, device

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for images, labels in decoded_ahead(self.loader, self.augmentation, self.device):
            yield {"img": images, "label": labels}

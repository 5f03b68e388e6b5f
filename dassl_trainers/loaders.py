"""Rebuilding Dassl's training loader with another sampling, everything else kept."""
from torch.utils.data import DataLoader


def loader_like(loader, **sampling):
    """A DataLoader over ``loader``'s dataset with its workers, collate, pinning and worker init, sampled as
    ``sampling`` says (``batch_size`` + ``sampler``, or ``batch_sampler``)."""
    return DataLoader(loader.dataset, num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn, **sampling)

"""Data-parallel training over torch.distributed, as torchrun launches it.

DistributedDataParallel averages the gradients, so every rank takes the same AdamW step and holds the
same weights; each rank's BMA copy is therefore the same without any communication of its own. The
trainers give each rank its share of every global batch, and only rank 0 writes files.
"""
import os
import sys


def launched_world_size():
    """Number of processes torchrun started (its WORLD_SIZE), 1 outside torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _group():
    """torch.distributed while a process group is up, else None. A group needs torch, so before torch is imported
    (while a run's inputs are checked) there is none, and nothing here imports it to find out."""
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def world_size():
    group = _group()
    return group.get_world_size() if group else launched_world_size()


def rank():
    """This process's rank; also known before the process group exists (torchrun's RANK)."""
    group = _group()
    return group.get_rank() if group else int(os.environ.get("RANK", "0"))


def is_main():
    return rank() == 0


def init_from_env(device=None):
    """Join the process group torchrun describes when it started more than one process; returns True
    when this call created the group (its caller then ends it with ``shutdown``).

    NCCL when ``device`` is CUDA (or None and CUDA is there), with this process on cuda:LOCAL_RANK; gloo on CPU.
    """
    if launched_world_size() <= 1 or _group():
        return False
    import torch

    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda" and device.index is not None:
        raise ValueError(f"device {device} names one GPU, but under torchrun each process uses cuda:LOCAL_RANK; "
                         "pass --device cuda (or leave it out)")
    use_cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
    if use_cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    return True


def shutdown():
    group = _group()
    if group:
        group.destroy_process_group()


def data_parallel(module, device):
    """``module`` in DistributedDataParallel when a process group of several ranks is up, else ``module``.

    Building it broadcasts rank 0's weights, so build it before anything copies them (the BMA's theta_0).
    """
    group = _group()
    if not group or group.get_world_size() == 1:
        return module
    import torch
    from torch.nn.parallel import DistributedDataParallel

    device_ids = None
    if device.type == "cuda":
        device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return DistributedDataParallel(module, device_ids=device_ids)


def all_reduce_sum(tensor):
    """Sum of ``tensor`` over ranks, in place (as is in a single process)."""
    group = _group()
    if group:
        group.all_reduce(tensor)
    return tensor


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (pickled; for small objects such as an epoch's batch indices)."""
    group = _group()
    if not group:
        return obj
    box = [obj]
    group.broadcast_object_list(box, src=0)
    return box[0]

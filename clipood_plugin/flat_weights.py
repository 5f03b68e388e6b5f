"""Keep a module's floating tensors as views into one flat buffer per dtype.

A weight average folds every floating tensor of a model into its copy; over ~150 separate tensors that is a
multi-tensor launch whose overhead exceeds the memory traffic, over one flat buffer per dtype it is one kernel.
The tensors stay the same objects (parameters keep their identity, order and state_dict entries); only their
storage moves, through ``.data``, as views into the buffer.
"""
from functools import cached_property

import torch


def floating_tensors(module):
    """The floating tensors of ``module.state_dict(keep_vars=True)`` in its order (parameters and floating
    buffers): the weights an average covers."""
    return [t for t in module.state_dict(keep_vars=True).values() if t.is_floating_point()]


@torch.no_grad()
def flatten(module):
    """Move the floating tensors of ``module`` into one new flat buffer per (dtype, device), in state_dict order,
    each tensor becoming a contiguous view of its buffer (a tensor listed twice, e.g. tied weights, once)."""
    groups = {}
    for tensor in {id(t): t for t in floating_tensors(module)}.values():
        groups.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    for (dtype, device), tensors in groups.items():
        buffer = torch.empty(sum(t.numel() for t in tensors), dtype=dtype, device=device)
        offset = 0
        for tensor in tensors:
            view = buffer[offset:offset + tensor.numel()].view(tensor.shape)
            view.copy_(tensor)
            tensor.data = view  # the same tensor object, now stored in the buffer
            offset += tensor.numel()


class FlatLayout:
    """Tensors that are consecutive contiguous views covering whole storages: ``buffers``, one flat tensor per
    storage in order of first use, and ``signature``, which tensor lies where (equal signatures: an elementwise
    operation over the buffers is the same operation over the tensors, pair by pair)."""

    def __init__(self, tensors, storages, signature):
        self.tensors, self.signature = tensors, signature
        self._storages = storages  # (storage, dtype, number of elements)
        self._addresses = list(map(torch.Tensor.data_ptr, tensors))

    @classmethod
    def of(cls, tensors):
        """The layout of ``tensors``, or None when they are not laid out flat (any other storage sharing, a gap,
        a tensor that is not contiguous)."""
        storages, used, signature = {}, [], []
        for tensor in tensors:
            storage = tensor.untyped_storage()
            index = storages.setdefault(storage.data_ptr(), len(storages))
            if index == len(used):
                used.append([storage, tensor.dtype, 0])
            entry = used[index]
            if tensor.dtype != entry[1] or not tensor.is_contiguous() or tensor.storage_offset() != entry[2]:
                return None
            entry[2] += tensor.numel()
            signature.append((index, tuple(tensor.shape), tensor.dtype))
        if any(numel * dtype.itemsize != storage.nbytes() for storage, dtype, numel in used):
            return None
        return cls(tensors, used, tuple(signature))

    @cached_property
    def buffers(self):
        return [torch.empty(0, dtype=dtype, device=storage.device).set_(storage, 0, (numel,))
                for storage, dtype, numel in self._storages]

    def intact(self):
        """Whether every tensor still lies where it did (a rebinding of ``.data``, e.g. by ``module.to``, moves it)."""
        return list(map(torch.Tensor.data_ptr, self.tensors)) == self._addresses

"""The trained module and its average laid out as one flat buffer per dtype: the fold is one lerp per buffer, the
arithmetic and everything on disk are as with separate tensors."""
import copy
import io
import math
import zipfile

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from clipood_plugin import BetaMovingAverage, learner as learner_module
from clipood_plugin.flat_weights import flatten
from test_learner import roundtrip


def beta_density(x, b):
    return x ** (b - 1) * (1 - x) ** (b - 1) * math.gamma(2 * b) / math.gamma(b) ** 2


HEADS = {"text": {}, "linear": {"head": "linear", "margin_kind": "none"}}  # the trained module: encoder (+ head)


def floats(module):
    return [t for t in module.state_dict(keep_vars=True).values() if t.is_floating_point()]


def assert_one_buffer(module):
    """Every floating tensor of ``module`` is a contiguous view into one storage, one after the other, filling it."""
    tensors = floats(module)
    storage = tensors[0].untyped_storage()
    offset = 0
    for tensor in tensors:
        assert tensor.untyped_storage().data_ptr() == storage.data_ptr()
        assert tensor.is_contiguous() and tensor.storage_offset() == offset
        offset += tensor.numel()
    assert offset * tensors[0].element_size() == storage.nbytes()


class CountedOps(TorchDispatchMode):
    """The aten operators run inside the block: (name, number of tensors of a multi-tensor op's first list)."""
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        listed = args and isinstance(args[0], (list, tuple))
        self.calls.append((func.overloadpacket.__name__, len(args[0]) if listed else None))
        return func(*args, **(kwargs or {}))

    @property
    def names(self):
        return [name for name, _ in self.calls]


@pytest.mark.parametrize("head", ["text", "linear"])
def test_the_trained_module_and_its_average_are_views_of_one_buffer_with_the_same_parameters(make_learner, head):
    learner = make_learner(**HEADS[head])
    assert_one_buffer(learner.model)
    assert_one_buffer(learner.averager.module)
    assert floats(learner.model)[0].untyped_storage().data_ptr() != \
        floats(learner.averager.module)[0].untyped_storage().data_ptr()
    # AdamW steps the module's own parameter objects, in the module's order
    assert [id(p) for group in learner.optimizer.param_groups for p in group["params"]] == \
        [id(p) for p in learner.model.parameters()]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in learner.model.parameters())


def test_authors_fp16_keeps_one_buffer_per_dtype_and_folds_over_them(make_learner, batches):
    learner = make_learner(model_name="clipood-tiny-quickgelu", precision="authors-fp16", lr=1e-4)
    for module in (learner.model, learner.averager.module):
        by_dtype = {}
        for tensor in floats(module):
            by_dtype.setdefault(tensor.dtype, set()).add(tensor.untyped_storage().data_ptr())
        assert set(by_dtype) == {torch.float16, torch.float32}  # CLIP's fp16 layers, its fp32 norms and embeddings
        assert all(len(storages) == 1 for storages in by_dtype.values())
    learner.update(*batches[0])
    with CountedOps() as ops:
        learner.averager.update(learner.model)
    assert ("_foreach_div_", 2) in ops.calls and not [n for n, count in ops.calls if count and count > 2]


def test_the_fold_is_one_lerp_over_the_buffer(make_learner, batches):
    learner = make_learner()
    learner.update(*batches[0])  # the first update finds the layout; later ones reuse it
    with CountedOps() as ops:
        learner.averager.update(learner.model)
    assert ops.names.count("lerp_") == 1 and "_foreach_lerp_" not in ops.names


def test_training_is_bit_identical_to_separate_tensors_and_the_average_to_a_per_tensor_lerp(make_learner, batches,
                                                                                              monkeypatch):
    beta, T = 0.5, len(batches)
    flat = make_learner(beta=beta, total_steps=T)
    trajectory = [[t.clone() for t in floats(flat.model)]]
    for images, labels in batches:
        flat.update(images, labels)
        trajectory.append([t.clone() for t in floats(flat.model)])
    monkeypatch.setattr(learner_module, "flatten", lambda module: None)
    separate = make_learner(beta=beta, total_steps=T)
    for images, labels in batches:
        separate.update(images, labels)
    for a, b in zip(floats(flat.model), floats(separate.model)):
        assert torch.equal(a, b)
    for a, b in zip(floats(flat.averager.module), floats(separate.averager.module)):
        assert torch.equal(a, b)

    # Eq. 7 per tensor over the recorded trajectory: the per-tensor lerp, and the formula in float64
    alphas = [beta_density((t + 0.5) / (T + 1), beta) for t in range(T + 1)]
    lerped = [t.clone() for t in trajectory[0]]
    exact = [t.double() for t in trajectory[0]]
    for t in range(1, T + 1):
        c = alphas[t] / sum(alphas[:t + 1])
        torch._foreach_lerp_(lerped, trajectory[t], c)
        exact = [avg + c * (theta.double() - avg) for avg, theta in zip(exact, trajectory[t])]
    for got, per_tensor, formula in zip(floats(flat.averager.module), lerped, exact):
        assert torch.equal(got, per_tensor)
        assert torch.allclose(got.double(), formula, atol=1e-6)


def test_the_authors_fold_over_fp16_buffers_is_engine_py_per_tensor():
    T, beta = 50, 0.5
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.LayerNorm(32)).half()  # fp16 weights: the authors' storage
    model[1].float()  # and an fp32 group beside them, as in CLIP's fp16 towers
    flatten(model)
    theta_0 = [t.clone() for t in floats(model)]
    bma = BetaMovingAverage(model, total_steps=T, beta=beta, authors_fold=True)

    def engine_py(average, theta, relative_weight):  # engine.py lines 28-31, per tensor
        return (average + relative_weight * theta) / (1 + relative_weight)

    expected, weight_sum = [t.clone() for t in theta_0], beta_density(0.5 / (T + 1), beta)
    with torch.no_grad():
        for t in range(1, T + 1):
            for p in model.parameters():
                p.add_(1e-3 * torch.randn_like(p))
            with CountedOps() as ops:
                bma.update(model)
            assert ("_foreach_div_", 2) in ops.calls  # over the two buffers, fp16 and fp32
            weight = beta_density((t + 0.5) / (T + 1), beta)
            expected = [engine_py(avg, theta, weight / weight_sum) for avg, theta in zip(expected, floats(model))]
            weight_sum += weight
    for got, want in zip(floats(bma.module), expected):
        assert got.dtype == want.dtype and torch.equal(got, want)


def test_a_plain_module_folds_per_tensor():
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    bma = BetaMovingAverage(model, total_steps=2, beta=1.0)
    assert_one_buffer(bma.module)  # the average is flat, the model is not: the fold goes tensor by tensor
    theta_0 = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    with CountedOps() as ops:
        bma.update(model)
    assert ("_foreach_lerp_", 4) in ops.calls and "lerp_" not in ops.names
    for got, a, b in zip(floats(bma.module), floats(theta_0), floats(model)):
        assert torch.allclose(got, (a + b) / 2)


def test_a_model_moved_off_its_buffer_is_still_averaged(make_learner):
    learner = make_learner(total_steps=3)
    model = learner.model
    bma = BetaMovingAverage(model, total_steps=3, beta=1.0)
    bma.update(model)
    with torch.no_grad():  # rebinding every tensor (as module.to does) leaves the buffer behind
        for p in model.parameters():
            p.data = p.data.clone() + 1
    bma.update(model)
    theta_1 = [t.clone() for t in floats(model)]
    start = floats(learner.averager.module)  # theta_0, untouched: the learner's averager saw no update
    for got, a, b in zip(floats(bma.module), start, theta_1):
        # uniform over theta_0, theta_1 (= theta_0) and theta_1 + 1
        assert torch.allclose(got, (2 * a + b) / 3, atol=1e-6)


def test_load_state_dict_keeps_the_views(make_learner, batches):
    learner = make_learner()
    learner.update(*batches[0])
    addresses = [t.data_ptr() for t in floats(learner.model) + floats(learner.averager.module)]
    other = make_learner(seed=3)
    other.update(*batches[1])
    learner.load_state_dict(roundtrip(other.state_dict()))
    assert [t.data_ptr() for t in floats(learner.model) + floats(learner.averager.module)] == addresses
    assert_one_buffer(learner.model)


def saved_bytes(state):
    """(file size, bytes of the tensor data in it) of ``torch.save(state)``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        data = sum(entry.file_size for entry in archive.infolist() if "/data/" in entry.filename)
    return len(buffer.getvalue()), data


def tensors_of(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_of(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors_of(item)


@pytest.mark.parametrize("head", ["text", "linear"])
@pytest.mark.parametrize("training_state", [True, False])
def test_checkpoints_hold_the_same_bytes_as_before(make_learner, batches, monkeypatch, head, training_state):
    flat = make_learner(**HEADS[head])
    flat.update(*batches[0])
    monkeypatch.setattr(learner_module, "flatten", lambda module: None)
    separate = make_learner(**HEADS[head])
    separate.update(*batches[0])
    flat_state, separate_state = (learner.state_dict(include_training_state=training_state)
                                  for learner in (flat, separate))
    flat_size, flat_data = saved_bytes(flat_state)
    separate_size, separate_data = saved_bytes(separate_state)
    unique = {id(t): t for t in tensors_of(separate_state)}.values()
    assert flat_data == separate_data == sum(t.numel() * t.element_size() for t in unique)
    assert flat_size <= separate_size  # fewer storage records, the same tensor bytes
    for key in ("inference_encoder", "image_encoder") if training_state else ("inference_encoder",):
        for (name, a), (other, b) in zip(flat_state[key].items(), separate_state[key].items()):
            assert name == other and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def test_checkpoints_load_across_the_change_and_resume_bit_identically(make_learner, batches, monkeypatch):
    flat = make_learner()
    for images, labels in batches[:2]:
        flat.update(images, labels)
    flat_saved = roundtrip(flat.state_dict())
    monkeypatch.setattr(learner_module, "flatten", lambda module: None)
    separate = make_learner()
    for images, labels in batches[:2]:
        separate.update(images, labels)
    separate_saved = roundtrip(separate.state_dict())
    monkeypatch.undo()
    from_separate = make_learner(seed=5)  # flat, from a checkpoint written with separate tensors
    from_separate.load_state_dict(separate_saved)
    monkeypatch.setattr(learner_module, "flatten", lambda module: None)
    from_flat = make_learner(seed=6)  # separate tensors, from a flat learner's checkpoint
    from_flat.load_state_dict(flat_saved)
    for learner in (flat, separate, from_separate, from_flat):
        for images, labels in batches[2:]:
            learner.update(images, labels)
    for learner in (separate, from_separate, from_flat):
        for a, b in zip(floats(learner.model) + floats(learner.averager.module),
                        floats(flat.model) + floats(flat.averager.module)):
            assert torch.equal(a, b)

"""WiSE-FT (Wortsman et al., CVPR 2022) as an evaluation of any fine-tuned learner: the weights
theta_alpha = (1 - alpha) theta_0 + alpha theta_ft over a sweep of alpha, where theta_0 are the weights
fine-tuning started from and theta_ft those the learner predicts with (its averaged weights, the BMA model,
or its last ones under averaging "none").

The learner fine-tunes its image encoder (with a linear head: encoder and head) against frozen text features,
so interpolating the module ``predict`` runs is the whole of WiSE-FT here. Every floating-point tensor is
interpolated with one ``torch._foreach_lerp_``, whose formula (``start + w * (end - start)`` for w < 0.5,
``end - (end - start) * (1 - w)`` above) gives theta_0 at alpha 0 and theta_ft at alpha 1 exactly.

    theta_0 = pretrained_weights(learner)                 # before or after training
    curve = wise_ft_accuracy(learner, theta_0, [0, 0.5, 1], {"sketch": loader})
    curve[0.5]["sketch"]                                  # accuracy (%)
"""
import contextlib

import torch

from .backbone import export_metadata, exported_model_name, load_clip
from .checkpoint_format import check_tensors
from .evaluation import evaluate
from .pretrained_check import check_run_weights
from .prompts import PromptEncoder
from .settings import DataError, check_settings
from .training_step import clip_storage


def pretrained_weights(learner, pretrained=None):
    """theta_0 of ``learner``: a state dict of its ``inference_encoder`` as fine-tuning started, on its device.
    That is the image encoder of the pretrained weights (``pretrained``, a tag or file; default the ones the
    learner was built from), loaded as the learner loads them, and with a linear head also the head's
    initialization, the zero-shot classifier of the learner's class text features (learner.trained_module).
    Weights other than the learner's own must give its text features (else DataError: they are not the ones
    its run started from).

    A model trained from a random init has no theta_0 but its init, which is not saved: DataError."""
    source = learner.config["pretrained"] if pretrained is None else str(pretrained)
    if source is None:
        raise DataError("the model was trained from a random init (pretrained none), whose initial weights are not "
                        "saved: WiSE-FT interpolates towards the weights fine-tuning started from, so it needs a "
                        "model fine-tuned from pretrained weights")
    clip_model, _, _, tokenizer = load_clip(learner.config["model_name"], source,
                                            precision=clip_storage(learner.precision))
    if source != learner.config["pretrained"]:  # weights named apart from those the learner was built from
        check_run_weights(PromptEncoder(clip_model, tokenizer, learner.config["templates"]), learner.class_names,
                          learner.text_features, source)
    return learner.trained_module(clip_model.visual.to(learner.device)).state_dict()


def saved_model_pretrained_weights(path, learner, pretrained=None):
    """theta_0 of the model saved in ``path`` that ``learner`` was read back from (saved_model.load_learner).
    A `clipood export` file is read back as a learner built from the export itself; the weights its run
    started from are recorded in the JSON beside it. ``pretrained`` replaces them (e.g. a local file of a tag)."""
    if pretrained is None and exported_model_name(path) is not None:
        pretrained = export_metadata(path)["pretrained"]
    return pretrained_weights(learner, pretrained)


@contextlib.contextmanager
def interpolation(learner, theta_0):
    """Within it, ``interpolate(alpha)`` sets the weights ``learner.predict`` uses (its ``inference_encoder``) to
    (1 - alpha) theta_0 + alpha theta_ft, theta_ft being the weights it held on entry; these come back bit for
    bit on exit. Tensors that are not floating point stay theta_ft's. Beside theta_0 it keeps one copy of
    theta_ft, whatever the number of alphas.

    >>> with interpolation(learner, pretrained_weights(learner)) as interpolate:
    ...     interpolate(0.5)
    ...     logits = learner.predict(images)
    """
    module = learner.inference_encoder
    state = module.state_dict(keep_vars=True)
    check_tensors("theta_0", theta_0, state)
    names = [name for name, tensor in state.items() if tensor.is_floating_point()]
    weights = [state[name] for name in names]
    start = [theta_0[name].to(weight.device, weight.dtype) for name, weight in zip(names, weights)]
    fine_tuned = [weight.detach().clone() for weight in weights]

    @torch.no_grad()
    def interpolate(alpha):
        check_settings({"wise_ft_alphas": [alpha]})
        torch._foreach_copy_(weights, start)
        torch._foreach_lerp_(weights, fine_tuned, float(alpha))

    try:
        yield interpolate
    finally:
        with torch.no_grad():
            torch._foreach_copy_(weights, fine_tuned)


def wise_ft_accuracy(learner, theta_0, alphas, loaders, skipped=None):
    """{alpha: {split: accuracy (%)}} of the weights (1 - alpha) theta_0 + alpha theta_ft for each of ``alphas``
    (distinct, in [0, 1]), through evaluation.evaluate: ``loaders`` is {split: loader of (images, labels,
    unreadable)}, as evaluation.evaluation_loader makes them; the (path, reason) of each unreadable image is
    appended to ``skipped`` (once per alpha). The learner's weights are theta_ft again when it returns."""
    check_settings({"wise_ft_alphas": alphas})
    skipped = [] if skipped is None else skipped
    curve = {}
    with interpolation(learner, theta_0) as interpolate:
        for alpha in alphas:
            interpolate(alpha)
            curve[alpha] = evaluate(learner, loaders, averaged=True, skipped=skipped)
    return curve

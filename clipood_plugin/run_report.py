"""The report of a finished `clipood train` run: results.json (written and read here), the text table it
prints and its plot (results.png). Reading needs neither torch nor matplotlib (`clipood figure5` reads runs
where they may be absent)."""
import dataclasses
import json

from .files import save_atomic, write_json
from .results_table import UnusableRun, checked_accuracy, format_table, mean_accuracy
from .settings import AVERAGED_MODEL_NAMES

FAILED = "failed"  # the key of results.json that marks a failed run, with the reason


def run_results(config, class_names, train_domains, state, model_file):
    """The results of a finished run (``state``: its RunState) as results.json holds them; SWAD's window and the
    WiSE-FT curve are added where the run has them."""
    final = state.history[-1]
    return {
        "config": dataclasses.asdict(config), "class_names": class_names,
        "train_domains": train_domains, "test_domains": config.test_domains,
        "accuracy": {"zero_shot": state.zero_shot, "final": final["final"], "bma": final["bma"]},
        "test_mean": {k: mean_accuracy(v, config.test_domains) for k, v in
                      (("zero_shot", state.zero_shot), ("final", final["final"]), ("bma", final["bma"]))},
        "history": state.history, "bma_weights": state.bma_weights, "losses": state.losses,
        "skipped_images": [{"path": p, "reason": r} for p, r in sorted(state.skipped_images.items())],
        "model_file": str(model_file),
    }


def failed_results(config, class_names, train_domains, state, reason):
    """results.json of a run that ended as failed (``reason``): what it recorded until then, as evidence, and no
    accuracy a summary could take for a result."""
    return {FAILED: reason, "config": dataclasses.asdict(config), "class_names": class_names,
            "train_domains": train_domains, "test_domains": config.test_domains, "history": state.history,
            "bma_weights": state.bma_weights, "losses": state.losses,
            "skipped_images": [{"path": p, "reason": r} for p, r in sorted(state.skipped_images.items())]}


def write_results(results, path):
    """results.json of a run: the dict `clipood train` returns, as strict JSON."""
    write_json(results, path)


def read_results(path):
    """A run's results.json as `clipood train` writes it, checked: {"config", "test_domains", "bma": {domain:
    accuracy}, "mean_bma", "mean_final"} (accuracies in %), None if the run has not finished, UnusableRun
    naming why it cannot be used."""
    if not path.exists():
        return None
    try:
        results = json.loads(path.read_text())
        if isinstance(results, dict) and FAILED in results:
            raise UnusableRun(f"{path}: the run failed ({results[FAILED]})")
        config, domains = results["config"], results["test_domains"]
        bma, mean = results["accuracy"]["bma"], results["test_mean"]
        if not (isinstance(config, dict) and isinstance(domains, list) and isinstance(bma, dict)):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = getattr(error, "strerror", None) or (str(error) if isinstance(error, ValueError) else
                                                      "not what clipood train writes")
        raise UnusableRun(f"{path} unreadable ({reason})") from None
    checked = {"config": config, "test_domains": domains,
               "bma": {domain: checked_accuracy(bma.get(domain), f"{path}: the accuracy on {domain}")
                       for domain in domains},
               **{f"mean_{key}": checked_accuracy(mean.get(key), f"{path}: the mean accuracy ({key})")
                  for key in ("bma", "final")}}
    if "wise_ft" in results:
        checked["wise_ft"] = _checked_wise_ft(results["wise_ft"], domains, path)
    return checked


def _checked_wise_ft(wise_ft, domains, path):
    """{"best_alpha", "best": {domain: accuracy}, "curve": [(alpha, holdout mean, test mean)]} of a run's
    WiSE-FT results."""
    try:
        curve = {entry["alpha"]: entry for entry in wise_ft["curve"]}
        best = curve[wise_ft["best_alpha"]]
    except (KeyError, TypeError):
        raise UnusableRun(f"{path}: its wise_ft results are not what clipood train writes (or it had no holdout "
                          "to choose alpha on)") from None
    return {"best_alpha": wise_ft["best_alpha"],
            "best": {domain: checked_accuracy(best["accuracy"].get(domain), f"{path}: WiSE-FT's accuracy on {domain}")
                     for domain in domains},
            "curve": [(alpha, entry["holdout_mean"], entry["test_mean"]) for alpha, entry in curve.items()]}


def report(results):
    """The accuracy of each split and the test mean, zero-shot, of the last weights and of the averaged ones; a
    WiSE-FT curve below them."""
    accuracy, mean = results["accuracy"], results["test_mean"]
    averaged = AVERAGED_MODEL_NAMES[results["config"]["averaging"]]
    rows = [[name, *(f"{accuracy[key][name]:.1f}" for key in ("zero_shot", "final", "bma"))]
            for name in accuracy["zero_shot"]]
    rows.append(["test mean", *(f"{mean[key]:.1f}" for key in ("zero_shot", "final", "bma"))])
    lines = [format_table(["accuracy (%)", "zero-shot", "final", averaged], rows)]
    if "wise_ft" in results:
        curve, best_alpha = results["wise_ft"]["curve"], results["wise_ft"]["best_alpha"]
        table = format_table(["WiSE-FT alpha", "holdout mean", "test mean"],
                             [[f"{entry['alpha']:g}", "-" if entry["holdout_mean"] is None else
                               f"{entry['holdout_mean']:.1f}", f"{entry['test_mean']:.1f}"] for entry in curve])
        header, *rows = table.splitlines()
        lines += [header, *(row + ("  <- best on the holdout" if entry["alpha"] == best_alpha else "")
                            for row, entry in zip(rows, curve))]
    return "\n".join(lines)


def plot_results(results, path):
    """results.png: ``results_figure``."""
    import matplotlib.pyplot as plt

    figure = results_figure(results)
    save_atomic(lambda file: figure.savefig(file, dpi=100, format="png"), path)
    plt.close(figure)


def results_figure(results):
    """Left: test accuracy over steps (final vs the averaged model) against zero-shot, the legend below (never on
    the curves); middle: the training loss of each step; right: the BMA weight a_t of each step (t=0: pretrained)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test_domains = results["test_domains"]
    steps = [h["step"] for h in results["history"]]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4))
    for key, label in (("final", "current weights"), ("bma", AVERAGED_MODEL_NAMES[results["config"]["averaging"]])):
        left.plot(steps, [mean_accuracy(h[key], test_domains) for h in results["history"]], marker="o", label=label)
    random_init = results["config"]["pretrained"] in (None, "none")
    left.axhline(results["test_mean"]["zero_shot"], color="gray", linestyle="--",
                 label="zero-shot (random init: chance level)" if random_init else "zero-shot")
    left.set(xlabel="step", ylabel="test accuracy (%)", title=f"test domains: {', '.join(test_domains)}")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=True)
    middle.plot(range(1, len(results["losses"]) + 1), results["losses"])
    middle.set(xlabel="step", ylabel="loss", title="training loss")
    right.plot(range(len(results["bma_weights"])), results["bma_weights"])
    right.set(xlabel="step", ylabel="weight a_t",
              title=f"{results['config']['averaging']} weights (beta={results['config']['bma_beta']})")
    fig.tight_layout()
    return fig

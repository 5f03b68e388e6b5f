"""`clipood evaluate`: the accuracy of a saved model (any that saved_model.load_learner reads) on a
ROOT/<domain>/<class>/<image> folder dataset, per domain and on average, optionally predicting among other
class names than it was trained on (open classes: each folder class is looked up by name in that list), and
optionally that of WiSE-FT's interpolations with the pretrained weights for a list of alphas (wise_ft.py)."""
from pathlib import Path

import torch

from .backbone import MissingPackageError, export_metadata_path
from .command_line import fail
from .evaluation import evaluate, evaluation_loader
from .files import write_json
from .folders import scan_domain_folders
from .results_table import format_table, mean_accuracy
from .saved_model import load_learner
from .settings import DataError, check_device, check_settings
from .wise_ft import saved_model_pretrained_weights, wise_ft_accuracy
from .write_guard import check_writes, json_written_by, with_writer

COMMAND = "clipood evaluate"


def class_names_from(listed=None, file=None):
    """The class names of --class-names a,b,c or --class-names-file FILE (one per line), else None."""
    if file is not None:
        try:
            # utf-8-sig: a byte-order mark (Windows editors) is no part of the first name
            names = [line.strip() for line in Path(file).read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"--class-names-file {file}: cannot read it ({error.__class__.__name__})") from None
    elif listed is not None:
        names = [name.strip() for name in listed.split(",") if name.strip()]
    else:
        return None
    if not names:
        raise DataError("the class-name list is empty; give the names the model should choose among")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise DataError(f"the class-name list repeats {duplicated}; give each name once")
    return names


def evaluate_saved_model(model_path, data_dir, domains=None, class_names=None, device=None, batch_size=128,
                         workers=0, pretrained=None, wise_ft=None):
    """The results dict: accuracy (%) per domain, their mean, the class names predicted among, and the
    images that could not be read; with a list of alphas ``wise_ft``, also "wise_ft": [{"alpha", "accuracy"
    (% per domain), "mean"}] of the weights (1 - alpha) pretrained + alpha saved, one entry per alpha."""
    check_device(device)
    if wise_ft is not None:
        check_settings({"wise_ft_alphas": wise_ft})
    dataset = scan_domain_folders(data_dir, allow_missing_classes=True)
    domains = list(domains or dataset.domains)
    unknown = sorted(set(domains) - set(dataset.domains))
    if unknown:
        raise DataError(f"unknown domain(s) {unknown}; the domains in {data_dir} are {dataset.domains}")
    learner = load_learner(model_path, device, pretrained)
    theta_0 = None if wise_ft is None else saved_model_pretrained_weights(model_path, learner, pretrained)
    names = class_names or list(learner.class_names)
    absent = [name for name in dataset.class_names if name not in names]
    if absent:
        given = f"(--class-names: {names[:8]!r}{' ...' if len(names) > 8 else ''})"  # repr: a stray mark shows
        raise DataError(f"the class folder(s) {absent} of {data_dir} are not among the class names predicted "
                        + (given if class_names else f"(those {model_path} was trained on)")
                        + "; pass --class-names with every folder class name")
    if names != learner.class_names:
        if learner.config["head"] != "text":
            raise DataError(f"{model_path} has a linear head over its {len(learner.class_names)} training classes: "
                            "it cannot predict among other class names; leave out --class-names")
        if learner.config["pretrained"] is None:
            raise DataError(f"{model_path} was trained from a random init, whose text tower is not saved: it "
                            "cannot encode other class names; leave out --class-names")
        learner.set_class_names(names)
    label_of_folder = [names.index(name) for name in dataset.class_names]
    loaders = {domain: evaluation_loader([(path, label_of_folder[label]) for path, label in dataset.samples[domain]],
                                         learner.preprocess_val, workers, batch_size=batch_size)
               for domain in domains}
    skipped = list(dataset.skipped)
    with torch.no_grad():
        curve = {} if wise_ft is None else wise_ft_accuracy(learner, theta_0, wise_ft, loaders, skipped)
        # alpha 1 is the saved model, bit for bit (tests/test_wise_ft.py): not evaluated twice
        accuracy = curve[1] if 1 in curve else evaluate(learner, loaders, averaged=True, skipped=skipped)
    results = {"model": str(model_path), "data_dir": str(data_dir), "class_names": names,
               "images": {domain: len(dataset.samples[domain]) for domain in domains},
               "accuracy": accuracy, "mean": mean_accuracy(accuracy),
               "skipped_images": [{"path": path, "reason": reason} for path, reason in sorted(set(skipped))]}
    if wise_ft is not None:
        results["wise_ft"] = [{"alpha": alpha, "accuracy": by_domain, "mean": mean_accuracy(by_domain)}
                              for alpha, by_domain in curve.items()]
    return results


def report(results):
    """The results as a table: images and accuracy per domain, then the mean."""
    width = max(len(name) for name in [*results["accuracy"], "mean"])
    lines = [f"{'domain':<{width}}  images  accuracy (%)"]
    for domain, accuracy in results["accuracy"].items():
        lines.append(f"{domain:<{width}}  {results['images'][domain]:6d}  {accuracy:12.1f}")
    lines.append(f"{'mean':<{width}}  {'':6}  {results['mean']:12.1f}")
    if "wise_ft" in results:
        domains = list(results["accuracy"])
        rows = [[f"{entry['alpha']:g}", *(f"{entry['accuracy'][d]:.1f}" for d in domains), f"{entry['mean']:.1f}"]
                for entry in results["wise_ft"]]
        lines += ["", "WiSE-FT, accuracy (%) of (1 - alpha) pretrained + alpha fine-tuned:",
                  format_table(["alpha", *domains, "mean"], rows)]
    return "\n".join(lines)


def check_output(args):
    """The write guard for --output: never a file evaluate reads (the model, an export's JSON, the pretrained
    weights, the class-names file) nor a run's file; another file only with --overwrite or if evaluate wrote it."""
    reads = [args.model, export_metadata_path(args.model), args.pretrained, args.class_names_file]
    check_writes({args.output: "--output"}, COMMAND, "--output", reads=reads,
                 task="the evaluation (the model, its export JSON, the pretrained weights or the class names)",
                 overwrite=args.overwrite, written_here=lambda path: json_written_by(path, COMMAND))


def main(args):
    """`clipood evaluate` with its parsed arguments; 2 on bad input."""
    try:
        if args.output:
            check_output(args)
        results = evaluate_saved_model(args.model, args.data_dir, args.domains,
                                       class_names_from(args.class_names, args.class_names_file), args.device,
                                       args.batch_size, args.workers, args.pretrained, args.wise_ft)
        if args.output:
            write_json(with_writer(results, COMMAND), args.output)
    except (DataError, ValueError, MissingPackageError, FileNotFoundError) as error:  # unreachable weights: DataError
        return fail("evaluate", error)
    print(report(results))
    if results["skipped_images"]:
        print(f"skipped {len(results['skipped_images'])} unreadable image(s)"
              + (f", listed in {args.output}" if args.output else f" (first: {results['skipped_images'][0]['path']})"))
    if args.output:
        print(f"wrote {args.output}")
    return 0

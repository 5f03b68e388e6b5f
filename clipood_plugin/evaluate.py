"""`clipood evaluate`: the accuracy of a saved model (any that saved_model.load_learner reads) on a
ROOT/<domain>/<class>/<image> folder dataset, per domain and on average, optionally predicting among other
class names than it was trained on (open classes: each folder class is looked up by name in that list)."""
import sys
from pathlib import Path

import torch

from .backbone import WeightsUnavailableError
from .data import scan_domain_folders
from .files import write_json
from .saved_model import load_learner
from .settings import DataError, check_device
from .standalone import evaluate, evaluation_loader


def class_names_from(listed=None, file=None):
    """The class names of --class-names a,b,c or --class-names-file FILE (one per line), else None."""
    if file is not None:
        try:
            names = [line.strip() for line in Path(file).read_text().splitlines() if line.strip()]
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
                         workers=0, pretrained=None):
    """The results dict: accuracy (%) per domain, their mean, the class names predicted among, and the
    images that could not be read."""
    check_device(device)
    dataset = scan_domain_folders(data_dir, allow_missing_classes=True)
    domains = list(domains or dataset.domains)
    unknown = sorted(set(domains) - set(dataset.domains))
    if unknown:
        raise DataError(f"unknown domain(s) {unknown}; the domains in {data_dir} are {dataset.domains}")
    learner = load_learner(model_path, device, pretrained)
    names = class_names or list(learner.class_names)
    absent = [name for name in dataset.class_names if name not in names]
    if absent:
        raise DataError(f"the class folder(s) {absent} of {data_dir} are not among the class names predicted "
                        + ("(--class-names)" if class_names else f"(those {model_path} was trained on)")
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
        accuracy = evaluate(learner, loaders, averaged=True, skipped=skipped)
    return {"model": str(model_path), "data_dir": str(data_dir), "class_names": names,
            "images": {domain: len(dataset.samples[domain]) for domain in domains},
            "accuracy": accuracy, "mean": sum(accuracy.values()) / len(accuracy),
            "skipped_images": [{"path": path, "reason": reason} for path, reason in sorted(set(skipped))]}


def report(results):
    """The results as a table: images and accuracy per domain, then the mean."""
    width = max(len(name) for name in [*results["accuracy"], "mean"])
    lines = [f"{'domain':<{width}}  images  accuracy (%)"]
    for domain, accuracy in results["accuracy"].items():
        lines.append(f"{domain:<{width}}  {results['images'][domain]:6d}  {accuracy:12.1f}")
    lines.append(f"{'mean':<{width}}  {'':6}  {results['mean']:12.1f}")
    return "\n".join(lines)


def main(args):
    """`clipood evaluate` with its parsed arguments; 2 on bad input."""
    try:
        results = evaluate_saved_model(args.model, args.data_dir, args.domains,
                                       class_names_from(args.class_names, args.class_names_file), args.device,
                                       args.batch_size, args.workers, args.pretrained)
        if args.output:
            write_json(results, args.output)
    except (DataError, ValueError, WeightsUnavailableError, FileNotFoundError) as error:
        print(f"clipood evaluate: error: {error}", file=sys.stderr)
        return 2
    print(report(results))
    if results["skipped_images"]:
        print(f"skipped {len(results['skipped_images'])} unreadable image(s)"
              + (f", listed in {args.output}" if args.output else f" (first: {results['skipped_images'][0]['path']})"))
    if args.output:
        print(f"wrote {args.output}")
    return 0

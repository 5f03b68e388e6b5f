"""Open classes on datasets that do not split their classes themselves (Dassl's DG datasets):
train on the base half, test on all classes, report base and new accuracy (paper Table 4 setting).

The split follows CoOp's convention: base = the first ceil(n/2) of the sorted labels, new = the rest.
"""
import math

from .metrics import harmonic_mean


def base_class_count(num_classes):
    return math.ceil(num_classes / 2)


def check_labels_contiguous(datum_lists, num_classes):
    labels = {item.label for items in datum_lists for item in items}
    if labels != set(range(num_classes)):
        raise ValueError(f"TRAINER.CLIPOOD.OPEN_CLASSES needs labels 0..{num_classes - 1}, each present in the "
                         f"training set; the dataset has labels {sorted(labels)}")


def keep_base(items, num_base):
    return [item for item in items if item.label < num_base]


class BaseNewEvaluator:
    """Wraps a Dassl evaluator: passes every batch through, and also reports accuracy on the base
    and new classes (each predicted among all classes) and their harmonic mean."""

    def __init__(self, evaluator, num_base):
        self.evaluator = evaluator
        self.num_base = num_base
        self.reset()

    def reset(self):
        self.evaluator.reset()
        self.correct = {"base": 0, "new": 0}
        self.total = {"base": 0, "new": 0}

    def process(self, output, labels):
        self.evaluator.process(output, labels)
        hits = output.argmax(dim=1).eq(labels)
        is_base = labels < self.num_base
        for group, mask in (("base", is_base), ("new", ~is_base)):
            self.correct[group] += int(hits[mask].sum())
            self.total[group] += int(mask.sum())

    def evaluate(self):
        results = self.evaluator.evaluate()  # first key stays Dassl's accuracy over all classes
        accuracy = {group: 100.0 * self.correct[group] / max(self.total[group], 1) for group in self.correct}
        results["base_accuracy"] = accuracy["base"]
        results["new_accuracy"] = accuracy["new"]
        results["harmonic_mean"] = harmonic_mean(accuracy["base"], accuracy["new"])
        print(f"=> open-class result ({self.total['base']:,} base / {self.total['new']:,} new test images)\n"
              f"* base_accuracy: {results['base_accuracy']:.1f}%\n"
              f"* new_accuracy: {results['new_accuracy']:.1f}%\n"
              f"* harmonic_mean: {results['harmonic_mean']:.1f}%")
        return results

"""Open classes on datasets that do not split their classes themselves (Dassl's DG datasets):
train on the base half, test on all classes, report base and new accuracy (paper Table 4 setting).

The split is the authors' in-the-wild one (clipood_plugin.open_classes.num_base_classes at ratio 0.5).
"""
from clipood_plugin.open_classes import BaseNewAccuracy

OPEN_CLASS_RATIO = 0.5


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
        self.accuracy = BaseNewAccuracy(self.num_base)

    def process(self, output, labels):
        self.evaluator.process(output, labels)
        self.accuracy.update(output, labels)

    def evaluate(self):
        results = self.evaluator.evaluate()  # first key stays Dassl's accuracy over all classes
        split = self.accuracy.result()
        results["base_accuracy"] = 100.0 * split["base_acc"]
        results["new_accuracy"] = 100.0 * split["new_acc"]
        results["harmonic_mean"] = 100.0 * split["harmonic_mean"]
        print(f"=> open-class result ({split['base_count']:,} base / {split['new_count']:,} new test images)\n"
              f"* base_accuracy: {results['base_accuracy']:.1f}%\n"
              f"* new_accuracy: {results['new_accuracy']:.1f}%\n"
              f"* harmonic_mean: {results['harmonic_mean']:.1f}%")
        return results

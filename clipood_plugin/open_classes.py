"""Open classes (paper Table 4, "in the wild"): train on the first classes, hold the last ones out,
evaluate over all of them, and report base and new accuracy with their harmonic mean."""
import torch


def num_base_classes(num_classes, open_class_ratio):
    """How many of the first classes are trained on: ``int((1 - ratio) * num_classes)``, the authors' split
    (65 OfficeHome classes at ratio 0.5 -> 32 base, 33 new)."""
    if not 0 <= open_class_ratio < 1:
        raise ValueError(f"open_class_ratio must be in [0, 1), got {open_class_ratio!r}")
    count = int((1 - open_class_ratio) * num_classes)
    if count < 1:
        raise ValueError(f"open_class_ratio={open_class_ratio} leaves no base class out of {num_classes}")
    return count


def harmonic_mean(base, new):
    """H = 2 * base * new / (base + new) (CoCoOp, CLIPood Table 3); 0 when both are 0."""
    return 2 * base * new / (base + new) if base + new else 0.0


class BaseNewAccuracy:
    """Accuracy of predictions over all classes, split by whether the true label is a base class
    (label < num_base) or a new one, and over every sample ("total", as in the paper's Table 4).
    Accuracies are fractions in [0, 1]."""

    def __init__(self, num_base):
        self.num_base = num_base
        self.correct = torch.zeros(2)
        self.count = torch.zeros(2)

    def update(self, logits, labels):
        labels = labels.cpu()
        hits = (logits.argmax(dim=1).cpu() == labels).float()
        is_new = (labels >= self.num_base).long()
        self.correct.index_add_(0, is_new, hits)
        self.count.index_add_(0, is_new, torch.ones_like(hits))

    def result(self):
        base, new = (self.correct / self.count.clamp(min=1)).tolist()
        total = (self.correct.sum() / self.count.sum().clamp(min=1)).item()
        return {"base_acc": base, "new_acc": new, "harmonic_mean": harmonic_mean(base, new), "total_acc": total,
                "base_count": int(self.count[0]), "new_count": int(self.count[1])}

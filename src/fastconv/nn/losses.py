"""Losses: callables returning (mean loss, dloss/dlogits)."""
from .. import functional as F


class SoftmaxCrossEntropy:
    """Softmax followed by cross-entropy, averaged over the batch; labels are class indices."""

    name = "softmax_cross_entropy"

    def __call__(self, logits, labels):
        return F.softmax_cross_entropy(logits, labels)


LOSSES = {SoftmaxCrossEntropy.name: SoftmaxCrossEntropy}

"""Comparing two lists of eval outputs (torchvision's contract: boxes, labels, scores, masks).

A test helper, not library code: the tests compare our model's outputs with torchvision's and
with themselves after a save and load.
"""

from __future__ import annotations

from torch import Tensor


def same_outputs(a: list[dict[str, Tensor]], b: list[dict[str, Tensor]]) -> dict[str, float]:
    """Largest differences between two eval outputs, over all images: 0.0 everywhere when equal.

    ``boxes`` and ``scores``: largest absolute difference; ``labels_differ`` and
    ``mask_pixels_differ``: largest fraction of an image's labels / mask pixels (at 0.5)
    that differ; ``count_differs``: 1.0 if some image has a different number of detections.
    """
    if len(a) != len(b):
        raise ValueError(f"{len(a)} images vs {len(b)}")
    worst = {"boxes": 0.0, "scores": 0.0, "labels_differ": 0.0, "mask_pixels_differ": 0.0, "count_differs": 0.0}
    for x, y in zip(a, b, strict=True):
        # torchvision's forward does not turn autograd off: its outputs may carry gradients
        x, y = ({k: v.detach() for k, v in d.items()} for d in (x, y))
        if len(x["boxes"]) != len(y["boxes"]):
            worst["count_differs"] = 1.0
            continue
        if len(x["boxes"]) == 0:
            continue
        worst["boxes"] = max(worst["boxes"], float((x["boxes"] - y["boxes"]).abs().max()))
        worst["scores"] = max(worst["scores"], float((x["scores"] - y["scores"]).abs().max()))
        worst["labels_differ"] = max(worst["labels_differ"], float((x["labels"] != y["labels"]).float().mean()))
        differ = ((x["masks"] >= 0.5) != (y["masks"] >= 0.5)).float().mean()
        worst["mask_pixels_differ"] = max(worst["mask_pixels_differ"], float(differ))
    return worst

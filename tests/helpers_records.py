"""Checks every filtering record must pass (the record contract of ``minimask.fates``).

The oracle for "who suppressed whom" is ``torchvision.ops.nms`` itself: a pair (suppressor,
suppressed) run through torchvision's kernel on the boxes ``batched_nms`` gave it must come
back with only the suppressor kept.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import nms

from minimask.fates import CODE, FATES, KEPT


def check_partition(record, kept_rows: Tensor) -> None:
    """Kept rows and each step's dropped rows partition the input; funnel and fates agree."""
    n = len(record.fate)
    assert record.fate.dtype == torch.int8 and set(record.fate.unique().tolist()) <= set(range(len(FATES)))
    assert set(record.dropped) == set(record.steps) and list(record.dropped) == list(record.steps)
    rows = torch.cat([kept_rows, *record.dropped.values()])
    assert len(rows) == n and torch.equal(torch.sort(rows).values, torch.arange(n, device=rows.device))
    assert bool((record.fate[kept_rows] == KEPT).all())
    funnel = record.funnel
    assert list(funnel) == ["input", *record.steps] and funnel["input"] == n
    counts = list(funnel.values())
    for before, after, step in zip(counts, counts[1:], record.steps, strict=False):
        assert before - after == len(record.dropped[step])
    assert counts[-1] == len(kept_rows)
    for step, dropped in record.dropped.items():  # the lookup agrees with the table
        for row in dropped[:3].tolist():
            assert record.fate_of(row) == step
    if len(kept_rows):
        assert record.fate_of(int(kept_rows[0])) == "kept"


def _boxes_given_to_nms(step) -> Tensor:
    """The boxes torchvision's kernel saw inside ``batched_nms`` (``ops/boxes.py``)."""
    boxes = step.boxes
    if boxes.numel() > 4000:  # _batched_nms_vanilla: group by group, boxes as they are
        return boxes
    # _batched_nms_coordinate_trick, written out as there
    offsets = step.groups.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    return boxes + offsets[:, None]


def check_suppressors(record, limit: int = 400) -> int:
    """Every NMS-dropped row names a suppressor: kept by NMS, same group, scoring at least as high,
    and removing it in torchvision's own ``nms`` kernel. Returns the number of pairs checked."""
    by = record.suppressed_by
    dropped = record.dropped["nms"]
    assert len(by) == len(record.fate)
    assert bool((by[record.fate != CODE["nms"]] == -1).all())  # only NMS names suppressors
    if len(dropped) == 0:
        return 0
    assert bool((by[dropped] >= 0).all()), "an NMS-dropped row without a suppressor"
    step = record.nms
    position = torch.full((len(record.fate),), -1, dtype=torch.int64)
    position[step.rows] = torch.arange(len(step.rows))
    winners = by[dropped]
    assert bool((position[dropped] >= 0).all() and (position[winners] >= 0).all())
    kept_by_nms = torch.zeros(len(step.rows), dtype=torch.bool)
    kept_by_nms[step.keep] = True
    assert bool(kept_by_nms[position[winners]].all()), "a suppressor that NMS itself removed"
    given = _boxes_given_to_nms(step)
    pairs = list(zip(position[dropped].tolist(), position[winners].tolist(), strict=True))[:limit]
    for lost, win in pairs:
        assert int(step.groups[lost]) == int(step.groups[win])
        assert float(step.scores[win]) >= float(step.scores[lost])
        kept = nms(given[[win, lost]], torch.tensor([1.0, 0.0]), step.threshold)
        assert kept.tolist() == [0], f"torchvision's nms does not let box {win} remove box {lost}"
    return len(pairs)

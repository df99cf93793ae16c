"""The fate of every row a stage receives: kept, or the step that dropped it.

One vocabulary for every filtering record: the longlist (anchors), the shortlist
((proposal, class) candidates) and the training samplers (anchors, RoIs). Each record stores
one code per input row (``fate``) and, where NMS ran, the step's inputs (``NmsStep``) from
which the suppressor of every removed row is computed on first use. ``dropped`` and the
``funnel`` are derived from the fates, so they cannot disagree with them.

The same kind of step has the same name in every stage: ``cap`` is the longlist's post-NMS
top-k (``rpn_post_nms_top_n_test``) and the shortlist's ``box_detections_per_img``;
``nms`` is the RPN's per-level NMS and the box head's per-class NMS.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import torch
from torch import Tensor

from minimask import boxes as box_ops

# Codes are positions in FATES; the int8 ``fate`` tensors hold them.
FATES: tuple[str, ...] = (
    "kept",  # reached the stage's output
    "pre_nms_top_k",  # longlist: not among its level's rpn_pre_nms_top_n best logits
    "small_box",  # a side below rpn_min_size / box_min_size
    "score_threshold",  # below rpn_score_thresh / not above box_score_thresh
    "nms",  # removed by NMS (per level in the RPN, per class in the box head)
    "cap",  # past rpn_post_nms_top_n / box_detections_per_img
    "ignored",  # training: IoU between the background and foreground thresholds
    "not_sampled",  # training: a positive or negative the sampler did not draw
)
CODE: dict[str, int] = {name: i for i, name in enumerate(FATES)}
KEPT = CODE["kept"]


def new_fates(n: int, device: torch.device | str | None = None) -> Tensor:
    """``Tensor[n]`` int8, every row ``kept`` until a step says otherwise."""
    return torch.zeros(n, dtype=torch.int8, device=device)


def drop(fate: Tensor, step: str, rows: Tensor, keep: Tensor) -> Tensor:
    """Mark the ``rows`` that ``keep`` (positions into ``rows``) leaves out as dropped by ``step``.

    Returns ``rows[keep]``, the rows that go on to the next step.
    """
    lost = torch.ones(len(rows), dtype=torch.bool, device=rows.device)
    lost[keep] = False
    fate[rows[lost]] = CODE[step]
    return rows[keep]


@dataclass(frozen=True)
class NmsStep:
    """The inputs and decision of one NMS call, kept so that suppressors can be computed later.

    ``rows`` are the stage's input rows that entered NMS (``Tensor[n]``), with their ``boxes``
    (``Tensor[n, 4]``), ``scores`` and ``groups`` (the level or the class); ``keep`` is what
    ``torchvision.ops.batched_nms`` returned (positions into ``rows``, best first).
    """

    rows: Tensor
    boxes: Tensor
    scores: Tensor
    groups: Tensor
    keep: Tensor
    threshold: float

    @cached_property
    def suppressor(self) -> Tensor:
        """``Tensor[n]`` int64: position (into ``rows``) of the kept box that removed each box; -1 if kept."""
        return box_ops.nms_suppressors(self.boxes, self.scores, self.groups, self.keep, self.threshold)

    def suppressed_by(self, num_rows: int) -> Tensor:
        """``Tensor[num_rows]`` int64 over the stage's input rows: the suppressor's row, else -1."""
        out = torch.full((num_rows,), -1, dtype=torch.int64, device=self.rows.device)
        lost = torch.where(self.suppressor >= 0)[0]
        out[self.rows[lost]] = self.rows[self.suppressor[lost]]
        return out

    def iou_with_suppressor(self, num_rows: int) -> Tensor:
        """``Tensor[num_rows]``: IoU of each suppressed row with its suppressor (NaN elsewhere)."""
        out = torch.full((num_rows,), float("nan"), dtype=self.boxes.dtype, device=self.rows.device)
        lost = torch.where(self.suppressor >= 0)[0]
        if len(lost):
            out[self.rows[lost]] = _paired_iou(self.boxes[lost], self.boxes[self.suppressor[lost]])
        return out


def _paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of ``a[i]`` with ``b[i]`` without the full matrix (same arithmetic as ``boxes.iou``)."""
    top_left = torch.max(a[:, :2], b[:, :2])
    bottom_right = torch.min(a[:, 2:], b[:, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    return inter / (box_ops.area(a) + box_ops.area(b) - inter)


class Filtered:
    """What every filtering record derives from its ``fate`` codes and the order its steps ran.

    A subclass is a frozen dataclass with a ``fate`` field (``Tensor[N]`` int8, one code of
    ``FATES`` per input row) and, where NMS ran, an ``nms`` field (``NmsStep``); ``STEPS``
    names its steps in the order they usually run. A record whose rules ran them in another
    order (Detectron2's shortlist drops small boxes after the cap) stores that order in an
    ``order`` field; ``steps`` is what ran, and ``dropped``, ``funnel`` and ``alive_after``
    follow it.
    """

    STEPS: ClassVar[tuple[str, ...]] = ()
    fate: Tensor

    @property
    def steps(self) -> tuple[str, ...]:
        """The steps in the order they ran for this record."""
        return tuple(getattr(self, "order", ()) or self.STEPS)

    @property
    def dropped(self) -> dict[str, Tensor]:
        """Step -> the input rows it dropped (``Tensor`` int64, increasing), in the order run."""
        return {step: torch.where(self.fate == CODE[step])[0] for step in self.steps}

    def alive_after(self, step: str) -> Tensor:
        """``Tensor[N]`` bool: the input rows still in the stage after ``step`` ran.

        ``"input"`` gives every row; the last step gives the kept rows. A row dropped by a
        step that runs later is still alive here.
        """
        if step == "input":
            return torch.ones(len(self.fate), dtype=torch.bool, device=self.fate.device)
        if step not in self.steps:
            raise ValueError(f"{type(self).__name__} has no step {step!r}; its steps are {self.steps}")
        done = self.steps[: self.steps.index(step) + 1]
        gone = torch.tensor([CODE[s] for s in done], dtype=self.fate.dtype, device=self.fate.device)
        return ~torch.isin(self.fate, gone)

    @property
    def funnel(self) -> dict[str, int]:
        """``"input"``: rows in; then each step, in the order run -> rows that survive it."""
        return {step: int(self.alive_after(step).sum()) for step in ("input", *self.steps)}

    def fate_of(self, row: int) -> str:
        """The fate of input ``row``: ``"kept"`` or the step that dropped it."""
        if not 0 <= row < len(self.fate):
            raise IndexError(f"row {row} out of range: this stage had {len(self.fate)} input rows")
        return FATES[int(self.fate[row])]

    @cached_property
    def suppressed_by(self) -> Tensor:
        """``Tensor[N]`` int64: for each input row NMS removed, the kept input row that removed it; -1 elsewhere."""
        nms = getattr(self, "nms", None)  # the training samplers run no NMS
        if nms is None:
            return torch.full((len(self.fate),), -1, dtype=torch.int64, device=self.fate.device)
        return nms.suppressed_by(len(self.fate))

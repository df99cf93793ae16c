"""Chapter 4. The longlist: which anchors become proposals.

Of the ~200,000 anchors of a COCO-sized image, the RPN keeps about 1,000 proposals: the
best-scoring anchors of each pyramid level, decoded into boxes, clipped to the image, with
tiny and unlikely boxes removed and near-duplicates suppressed level by level. Every anchor
that does not make it is recorded with the step that dropped it.

Mirrors torchvision ``models/detection/rpn.py`` ``RegionProposalNetwork.filter_proposals``
(and ``_get_top_n_idx``), step by step and in the same order, so that the proposals are
the same boxes in the same order. Detectron2 ``find_top_rpn_proposals``
(``proposal_utils.py``) differs: it drops non-finite boxes, keeps sides > 0 instead of
>= 1e-3, has no score threshold, and keeps 1,000 instead of 2,000 proposals in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from minimask import boxes
from minimask.config import Config
from minimask.fates import CODE, KEPT, Filtered, NmsStep, drop, new_fates
from minimask.objectness import Objectness


@dataclass(frozen=True)
class Longlist(Filtered):
    """Chapter 4. One image's proposals, best first, and the fate of every anchor.

    Rows of ``boxes`` ... ``anchor_index`` are proposals; ``fate`` has one code per anchor
    (row of ``Objectness``): ``kept`` or the step that dropped it (``STEPS``, in order).
    ``dropped``, ``funnel`` and ``suppressed_by`` (per anchor) are derived (``fates.Filtered``).
    """

    STEPS: ClassVar[tuple[str, ...]] = ("pre_nms_top_k", "small_box", "score_threshold", "nms", "cap")

    boxes: Tensor  # (P, 4) xyxy, pixels of the resized image, clipped to it
    objectness: Tensor  # (P,) P(object) = sigmoid(logit); non-increasing (NMS's order)
    logits: Tensor  # (P,) the objectness logits that ranked them (detached)
    anchor_level: Tensor  # (P,) int64 pyramid level of the anchor: 0 = P2 (finest) ... 4 = P6
    anchor_index: Tensor  # (P,) int64 row in Objectness: the lineage link
    fate: Tensor  # (A,) int8 code in fates.FATES for every anchor
    nms: NmsStep  # the per-level NMS: its input anchors and decision (suppressors on demand)
    image_size: tuple[int, int]  # (h, w) the boxes were clipped to

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def top_k_per_level(logits: Tensor, num_per_level: list[int], k: int) -> Tensor:
    """Chapter 4. Rows of the ``k`` highest logits of each level (all of a level if fewer).

    Levels in order, each best first; torchvision ``_get_top_n_idx`` (per image and per
    level, on logits, before any NMS: the finest level cannot crowd out the others).
    """
    rows, offset = [], 0
    for n in num_per_level:
        # a (1, n) view as torchvision's batched call, so that ties break the same way
        top = logits[offset : offset + n][None].topk(min(k, n), dim=1).indices[0]
        rows.append(top + offset)
        offset += n
    return torch.cat(rows) if rows else logits.new_zeros(0, dtype=torch.int64)


def large_boxes(b: Tensor, cfg: Config) -> Tensor:
    """Chapter 4. Positions of the boxes whose sides pass ``cfg.rpn_min_size`` (1e-3 px).

    torchvision ``remove_small_boxes``: both sides >= the size; Detectron2
    ``Boxes.nonempty(threshold=MIN_SIZE)`` (``cfg.rpn_min_size_inclusive`` False): both sides >.
    """
    if cfg.rpn_min_size_inclusive:
        return boxes.remove_small(b, cfg.rpn_min_size)
    return torch.where(((b[:, 2] - b[:, 0]) > cfg.rpn_min_size) & ((b[:, 3] - b[:, 1]) > cfg.rpn_min_size))[0]


def nms_per_level(obj: Objectness, rows: Tensor, b: Tensor, scores: Tensor, cfg: Config) -> NmsStep:
    """Chapter 4. NMS at IoU > ``cfg.rpn_nms_thresh`` within each level of the anchors ``rows``.

    ``batched_nms`` with the anchor's level as the group; ``keep`` comes back best first.
    Boxes are ranked by P(object), or by the logit under Detectron2's rule
    (``cfg.rpn_nms_score`` "logit", ``find_top_rpn_proposals``).
    """
    level = obj.anchor_level[rows]
    ranked = obj.logits.detach()[rows] if cfg.rpn_nms_score == "logit" else scores
    keep = batched_nms(b, ranked, level, cfg.rpn_nms_thresh)
    return NmsStep(rows=rows, boxes=b, scores=ranked, groups=level, keep=keep, threshold=cfg.rpn_nms_thresh)


def select_longlist(obj: Objectness, cfg: Config, training: bool = False) -> Longlist:
    """Chapter 4. Which anchors become proposals, for one image (``obj.image_size``).

    1. ``pre_nms_top_k``: per level, the ``rpn_pre_nms_top_n_{train,test}`` highest logits;
    2. sigmoid, decode (already in ``obj.proposals``) and clip to the resized image;
    3. ``small_box``: drop boxes with a side < ``rpn_min_size`` (``large_boxes``);
    4. ``score_threshold``: drop P(object) < ``rpn_score_thresh`` (0: a no-op);
    5. ``nms``: NMS at IoU > ``rpn_nms_thresh`` (0.7) within each level (``nms_per_level``);
    6. ``cap``: keep the ``rpn_post_nms_top_n_{train,test}`` best of the image.
    torchvision ``RegionProposalNetwork.filter_proposals``: same steps, order, and output
    order (by objectness, best first). Every anchor gets a fate.
    """
    logits = obj.logits.detach()  # proposals are not trained through (torchvision detaches too)
    fate = new_fates(len(logits), logits.device)
    pre_k = cfg.rpn_pre_nms_top_n_train if training else cfg.rpn_pre_nms_top_n_test
    rows = top_k_per_level(logits, obj.num_per_level, pre_k)
    fate[:] = CODE["pre_nms_top_k"]
    fate[rows] = KEPT
    b = boxes.clip(obj.proposals[rows], obj.image_size)  # the resized image, not the padding
    scores = torch.sigmoid(logits[rows])
    keep = large_boxes(b, cfg)  # often slivers clipped at the border
    rows, b, scores = drop(fate, "small_box", rows, keep), b[keep], scores[keep]
    keep = torch.where(scores >= cfg.rpn_score_thresh)[0]  # >=, as torchvision "for backwards compatibility"
    rows, b, scores = drop(fate, "score_threshold", rows, keep), b[keep], scores[keep]
    nms = nms_per_level(obj, rows, b, scores, cfg)
    rows, b, scores = drop(fate, "nms", rows, nms.keep), b[nms.keep], scores[nms.keep]
    post_k = cfg.rpn_post_nms_top_n_train if training else cfg.rpn_post_nms_top_n_test
    fate[rows[post_k:]] = CODE["cap"]  # the best of the image, all levels together
    rows = rows[:post_k]
    return Longlist(
        boxes=b[:post_k],
        objectness=scores[:post_k],
        logits=logits[rows],
        anchor_level=obj.anchor_level[rows],
        anchor_index=rows,
        fate=fate,
        nms=nms,
        image_size=(int(obj.image_size[0]), int(obj.image_size[1])),
    )


def select_longlists(objs: list[Objectness], cfg: Config, training: bool = False) -> list[Longlist]:
    """Chapter 4. ``select_longlist`` for each image of a batch, clipped to its own size."""
    return [select_longlist(o, cfg, training) for o in objs]


# --- what chapter 4 counts (its figures draw these numbers, minimask.viz.rpn) ---------------------
def funnel_per_level(longlist: Longlist, anchor_level: Tensor, num_levels: int | None = None) -> dict[str, list[int]]:
    """Chapter 4. ``{"input": [...], step: [...]}``: the anchors of each level alive after each step.

    ``anchor_level`` is every anchor's level (``Objectness.anchor_level``); the steps are
    ``longlist.steps`` in the order run, and the sums over levels are ``longlist.funnel``.
    """
    level = torch.as_tensor(anchor_level, device=longlist.fate.device).to(torch.int64)
    num_levels = int(level.max()) + 1 if num_levels is None else num_levels
    return {
        step: torch.bincount(level[longlist.alive_after(step)], minlength=num_levels).tolist()
        for step in ("input", *longlist.steps)
    }


def coverage_ledger(longlist: Longlist, obj: Objectness, gt_boxes: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """Chapter 4. Which objects some box still covers after each step, per anchor level.

    Returns ``Tensor[S + 1, L + 1, G]`` bool: row 0 is the input (every anchor's decoded box,
    clipped to the image), row s the anchors alive after step s of ``longlist.steps``; column
    l < L counts only the boxes of level l, column L those of any level. An object is covered
    when a box reaches IoU >= ``iou_threshold`` with it.
    """
    num_levels = len(obj.num_per_level)
    steps = ("input", *longlist.steps)
    out = torch.zeros(len(steps), num_levels + 1, len(gt_boxes), dtype=torch.bool, device=longlist.fate.device)
    if len(gt_boxes) == 0:
        return out
    decoded = boxes.clip(obj.proposals.detach(), obj.image_size)
    hit = boxes.iou(gt_boxes.to(decoded.dtype), decoded) >= iou_threshold  # (G, A)
    for s, step in enumerate(steps):
        alive = longlist.alive_after(step)
        for lv in range(num_levels):
            out[s, lv] = (hit & (alive & (obj.anchor_level == lv))[None]).any(1)
        out[s, num_levels] = (hit & alive[None]).any(1)
    return out


def nms_groups(longlist: Longlist, max_groups: int = 4) -> list[tuple[int, list[int]]]:
    """Chapter 4. (kept position, its suppressed positions) in ``longlist.nms``.

    Positions index ``longlist.nms.rows`` / ``boxes``. The ``max_groups`` kept boxes that
    suppressed the most come first (ties: higher score first), their victims best first.
    """
    step = longlist.nms
    groups: dict[int, list[int]] = {}
    for pos in torch.where(step.suppressor >= 0)[0].tolist():
        groups.setdefault(int(step.suppressor[pos]), []).append(pos)
    order = sorted(groups, key=lambda k: (-len(groups[k]), -float(step.scores[k])))[:max_groups]
    return [(k, sorted(groups[k], key=lambda p: -float(step.scores[p]))) for k in order]


def covered_at_caps(longlist: Longlist, gt_boxes: Tensor, caps: list[int], iou_threshold: float = 0.5) -> list[int]:
    """Chapter 4. For each cap k: how many of ``gt_boxes`` the first k proposals cover
    (IoU >= ``iou_threshold``). The cap only truncates the sorted longlist, so one uncapped
    longlist answers every cap.
    """
    if len(gt_boxes) == 0 or len(longlist) == 0:
        return [0] * len(caps)
    hit = boxes.iou(gt_boxes.to(longlist.boxes.dtype), longlist.boxes) >= iou_threshold  # (G, P)
    return [int(hit[:, :k].any(1).sum()) for k in caps]

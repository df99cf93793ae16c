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

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from minimask import boxes
from minimask.config import Config
from minimask.objectness import Objectness

REASONS = ("top_k", "small", "score", "nms", "post_top_k")


@dataclass(frozen=True)
class Longlist:
    """Chapter 4. One image's proposals, best first, and every anchor that was dropped."""

    boxes: Tensor  # (P, 4) xyxy, pixels of the resized image, clipped to it
    objectness: Tensor  # (P,) P(object) = sigmoid(logit); non-increasing within NMS's order
    logits: Tensor  # (P,) the objectness logits that ranked them (detached)
    level: Tensor  # (P,) int64 pyramid level, 0 = finest
    anchor_index: Tensor  # (P,) int64 row in Objectness.anchors: the lineage link
    dropped: dict[str, Tensor]  # reason in REASONS -> int64 anchor rows dropped by that step
    suppressed_by: Tensor  # (len(dropped["nms"]),) anchor row of the NMS winner that removed each
    funnel: dict[str, int]  # "anchors", then each step of REASONS -> how many survive it
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


def nms_suppressors(b: Tensor, scores: Tensor, level: Tensor, keep: Tensor, thresh: float) -> Tensor:
    """Chapter 4. For each box NMS removed, the kept box that removed it (an index into ``b``).

    Greedy NMS removes a box when it first meets a better, kept box of the same group with
    IoU > thresh; that is the best-scoring kept box of the same level overlapping it that
    much (``keep`` is sorted best first). -1 where none is found (only possible through
    rounding at exactly the threshold). ``Tensor[len(b) - len(keep)]`` int64, in the order
    of the removed boxes' rows.
    """
    removed = torch.ones(len(b), dtype=torch.bool, device=b.device)
    removed[keep] = False
    winner = torch.full((len(b),), -1, dtype=torch.int64, device=b.device)
    for lvl in torch.unique(level[~removed]).tolist():  # level by level: small IoU matrices
        lost = torch.where(removed & (level == lvl))[0]
        kept = keep[level[keep] == lvl]  # still best first
        if len(lost) == 0:
            continue
        overlaps = (boxes.iou(b[lost], b[kept]) > thresh) & (scores[kept][None, :] >= scores[lost][:, None])
        first = overlaps.to(torch.uint8).argmax(dim=1)  # first True = best kept box
        winner[lost] = torch.where(overlaps.any(dim=1), kept[first], torch.full_like(first, -1))
    return winner[removed]


def select_longlist(obj: Objectness, image_size: tuple[int, int], cfg: Config, training: bool = False) -> Longlist:
    """Chapter 4. Which anchors become proposals, for one image.

    1. ``top_k``: per level, the ``rpn_pre_nms_top_n_{train,test}`` highest logits;
    2. sigmoid, decode (already in ``obj.proposals``) and clip to ``image_size``;
    3. ``small``: drop boxes with a side < ``rpn_min_size`` (1e-3 px);
    4. ``score``: drop P(object) < ``rpn_score_thresh`` (0: a no-op);
    5. ``nms``: NMS at IoU > ``rpn_nms_thresh`` (0.7) within each level (``batched_nms``);
    6. ``post_top_k``: keep the ``rpn_post_nms_top_n_{train,test}`` best of the image.
    torchvision ``RegionProposalNetwork.filter_proposals``: same steps, order, and output
    order (by objectness, best first). Returns a ``Longlist`` whose ``dropped`` and kept
    rows partition all anchors.
    """
    pre_k = cfg.rpn_pre_nms_top_n_train if training else cfg.rpn_pre_nms_top_n_test
    post_k = cfg.rpn_post_nms_top_n_train if training else cfg.rpn_post_nms_top_n_test
    logits = obj.logits.detach()  # proposals are not trained through (torchvision detaches too)
    n_anchors = len(logits)
    dropped: dict[str, Tensor] = {}
    funnel = {"anchors": n_anchors}

    def step(name: str, rows: Tensor, keep: Tensor) -> Tensor:  # record who leaves at this step
        mask = torch.ones(len(rows), dtype=torch.bool, device=rows.device)
        mask[keep] = False
        dropped[name] = rows[mask]
        funnel[name] = len(keep)
        return rows[keep]

    # 1. top-k per level on logits
    top = top_k_per_level(logits, obj.num_per_level, pre_k)
    mask = torch.ones(n_anchors, dtype=torch.bool, device=logits.device)
    mask[top] = False
    dropped["top_k"], funnel["top_k"] = torch.where(mask)[0], len(top)
    rows = top
    # 2. probabilities; clip the decoded boxes to the resized image (not the padding)
    b = boxes.clip(obj.proposals[rows], image_size)
    scores = torch.sigmoid(logits[rows])
    # 3. tiny boxes (often clipped to a sliver at the border)
    keep = boxes.remove_small(b, cfg.rpn_min_size)
    rows, b, scores = step("small", rows, keep), b[keep], scores[keep]
    # 4. unlikely boxes (>=, as torchvision "for backwards compatibility")
    keep = torch.where(scores >= cfg.rpn_score_thresh)[0]
    rows, b, scores = step("score", rows, keep), b[keep], scores[keep]
    # 5. NMS within each level; keep comes back sorted by score, best first
    level = obj.level[rows]
    keep = batched_nms(b, scores, level, cfg.rpn_nms_thresh)
    winners = nms_suppressors(b, scores, level, keep, cfg.rpn_nms_thresh)
    suppressed_by = torch.where(winners >= 0, rows[winners.clamp(min=0)], winners)
    rows, b, scores = step("nms", rows, keep), b[keep], scores[keep]
    # 6. the best of the image, all levels together
    keep = torch.arange(min(post_k, len(rows)), device=rows.device)
    rows, b, scores = step("post_top_k", rows, keep), b[keep], scores[keep]
    return Longlist(
        boxes=b,
        objectness=scores,
        logits=logits[rows],
        level=obj.level[rows],
        anchor_index=rows,
        dropped=dropped,
        suppressed_by=suppressed_by,
        funnel=funnel,
        image_size=(int(image_size[0]), int(image_size[1])),
    )


def select_longlists(objs: list[Objectness], cfg: Config, training: bool = False) -> list[Longlist]:
    """Chapter 4. ``select_longlist`` for each image of a batch, clipped to its own size."""
    return [select_longlist(o, o.image_size, cfg, training) for o in objs]

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


def select_longlist(obj: Objectness, image_size: tuple[int, int], cfg: Config, training: bool = False) -> Longlist:
    """Chapter 4. Which anchors become proposals, for one image.

    1. ``pre_nms_top_k``: per level, the ``rpn_pre_nms_top_n_{train,test}`` highest logits;
    2. sigmoid, decode (already in ``obj.proposals``) and clip to ``image_size``;
    3. ``small_box``: drop boxes with a side < ``rpn_min_size`` (1e-3 px);
    4. ``score_threshold``: drop P(object) < ``rpn_score_thresh`` (0: a no-op);
    5. ``nms``: NMS at IoU > ``rpn_nms_thresh`` (0.7) within each level (``batched_nms``);
    6. ``cap``: keep the ``rpn_post_nms_top_n_{train,test}`` best of the image.
    torchvision ``RegionProposalNetwork.filter_proposals``: same steps, order, and output
    order (by objectness, best first). Every anchor gets a fate; the record's kept and
    dropped rows partition all anchors.
    """
    pre_k = cfg.rpn_pre_nms_top_n_train if training else cfg.rpn_pre_nms_top_n_test
    post_k = cfg.rpn_post_nms_top_n_train if training else cfg.rpn_post_nms_top_n_test
    logits = obj.logits.detach()  # proposals are not trained through (torchvision detaches too)
    fate = new_fates(len(logits), logits.device)
    # 1. top-k per level on logits
    rows = top_k_per_level(logits, obj.num_per_level, pre_k)
    fate[:] = CODE["pre_nms_top_k"]
    fate[rows] = KEPT
    # 2. probabilities; clip the decoded boxes to the resized image (not the padding)
    b = boxes.clip(obj.proposals[rows], image_size)
    scores = torch.sigmoid(logits[rows])
    # 3. tiny boxes (often clipped to a sliver at the border)
    if cfg.rpn_min_size_inclusive:
        keep = boxes.remove_small(b, cfg.rpn_min_size)
    else:  # Detectron2 Boxes.nonempty(threshold=MIN_SIZE): both sides strictly greater
        keep = torch.where(((b[:, 2] - b[:, 0]) > cfg.rpn_min_size) & ((b[:, 3] - b[:, 1]) > cfg.rpn_min_size))[0]
    rows, b, scores = drop(fate, "small_box", rows, keep), b[keep], scores[keep]
    # 4. unlikely boxes (>=, as torchvision "for backwards compatibility")
    keep = torch.where(scores >= cfg.rpn_score_thresh)[0]
    rows, b, scores = drop(fate, "score_threshold", rows, keep), b[keep], scores[keep]
    # 5. NMS within each level; keep comes back sorted by score, best first
    level = obj.anchor_level[rows]
    # Detectron2 find_top_rpn_proposals ranks on the logits (cfg.rpn_nms_score "logit")
    ranked = logits[rows] if cfg.rpn_nms_score == "logit" else scores
    keep = batched_nms(b, ranked, level, cfg.rpn_nms_thresh)
    nms = NmsStep(rows=rows, boxes=b, scores=ranked, groups=level, keep=keep, threshold=cfg.rpn_nms_thresh)
    rows, b, scores = drop(fate, "nms", rows, keep), b[keep], scores[keep]
    # 6. the best of the image, all levels together
    fate[rows[post_k:]] = CODE["cap"]
    rows, b, scores = rows[:post_k], b[:post_k], scores[:post_k]
    return Longlist(
        boxes=b,
        objectness=scores,
        logits=logits[rows],
        anchor_level=obj.anchor_level[rows],
        anchor_index=rows,
        fate=fate,
        nms=nms,
        image_size=(int(image_size[0]), int(image_size[1])),
    )


def select_longlists(objs: list[Objectness], cfg: Config, training: bool = False) -> list[Longlist]:
    """Chapter 4. ``select_longlist`` for each image of a batch, clipped to its own size."""
    return [select_longlist(o, o.image_size, cfg, training) for o in objs]

"""Chapter 3. Objectness: one logit and four box deltas for every anchor.

A small convolutional head slides over every pyramid level (the same weights at every
level): a 3x3 conv + ReLU, then two 1x1 convs giving, per cell, ``A_cell`` objectness
logits ("is there an object whose box this anchor roughly covers?") and ``4 * A_cell``
deltas (how to move and stretch the anchor, ``boxes.decode``).

Mirrors torchvision ``models/detection/rpn.py``: ``RPNHead`` (same state-dict keys
``conv.0.0.*``, ``cls_logits.*``, ``bbox_pred.*`` and the same initialisation),
``concat_box_prediction_layers`` (flattening in (H, W, A) order) and the decoding in
``RegionProposalNetwork.forward``. Detectron2 ``StandardRPNHead`` computes the same with
other key names (``rpn_head.conv``, ``objectness_logits``, ``anchor_deltas``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from minimask import boxes
from minimask.anchors import anchor_coordinates, anchor_strides, anchors_per_location, make_anchors
from minimask.backbone import Features
from minimask.config import Config
from minimask.transform import Batch


class RPNHead(nn.Module):
    """Chapter 3. The RPN head: ``conv_depth`` x (3x3 conv + ReLU), then logits and deltas.

    ``forward(list of Tensor[N, C, H_l, W_l]) -> (list of Tensor[N, A_cell, H_l, W_l],
    list of Tensor[N, 4 * A_cell, H_l, W_l])``. Every conv is initialised normal(std 0.01),
    bias 0, after all are built, so that under one seed it draws the same weights as
    torchvision ``RPNHead`` (whose state-dict layout it has: ``conv.<i>.0`` is conv i).
    """

    _version = 2  # torchvision's RPNHead version: state dicts carry it in their metadata

    def __init__(self, in_channels: int, num_anchors: int, conv_depth: int = 1) -> None:
        super().__init__()
        # nn.Sequential(conv, ReLU) per layer: the layout of torchvision's Conv2dNormActivation
        self.conv = nn.Sequential(
            *[
                nn.Sequential(nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True))
                for _ in range(conv_depth)
            ]
        )
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, kernel_size=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.constant_(layer.bias, 0)

    def forward(self, maps: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, deltas = [], []
        for x in maps:
            t = self.conv(x)
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


@dataclass(frozen=True)
class Objectness:
    """Chapter 3. One image's anchors with their objectness logits, deltas and decoded boxes.

    Row k of every field is anchor k of the levels concatenated finest first; within a level
    the order is (y, x, anchor_in_cell). ``logits`` and ``deltas`` keep their gradient (the
    RPN losses need it); ``proposals`` are decoded from detached deltas, as torchvision.
    """

    anchors: Tensor  # (A, 4) xyxy pixels of the padded batch
    logits: Tensor  # (A,) objectness logit; sigmoid = P(object)
    deltas: Tensor  # (A, 4) (dx, dy, dw, dh) predicted for the anchor
    proposals: Tensor  # (A, 4) boxes.decode(deltas, anchors), not clipped
    anchor_level: Tensor  # (A,) int64 pyramid level of the anchor: 0 = P2 (map "0") ... 4 = P6 ("pool")
    y: Tensor  # (A,) int64 row of the anchor's cell in its level's map
    x: Tensor  # (A,) int64 column of the anchor's cell
    anchor_in_cell: Tensor  # (A,) int64 which cell anchor (ratio-major, see anchors.cell_anchors)
    num_per_level: list[int]  # anchors per level: H_l * W_l * A_cell
    grid_sizes: list[tuple[int, int]]  # (H_l, W_l) per level
    strides: list[tuple[int, int]]  # (stride_y, stride_x) per level, pixels
    anchors_per_location: int  # A_cell
    image_size: tuple[int, int]  # (h, w) of the resized image, before padding

    @property
    def scores(self) -> Tensor:
        """(A,) P(object) = sigmoid(logits)."""
        return torch.sigmoid(self.logits)

    def level_rows(self, level: int) -> slice:
        """The rows of one level in the concatenated fields."""
        start = sum(self.num_per_level[:level])
        return slice(start, start + self.num_per_level[level])

    def level_logits(self, level: int) -> Tensor:
        """Logits of one level as ``Tensor[A_cell, H_l, W_l]``: a heat map per cell anchor."""
        h, w = self.grid_sizes[level]
        return self.logits[self.level_rows(level)].reshape(h, w, self.anchors_per_location).permute(2, 0, 1)


def flatten_level(t: Tensor, values_per_anchor: int) -> Tensor:
    """Chapter 3. ``Tensor[N, A_cell * V, H, W]`` -> ``Tensor[N, H * W * A_cell, V]`` in (H, W, A) order.

    The head's channel c = a * V + v holds value v of cell anchor a; torchvision
    ``permute_and_flatten``.
    """
    n, c, h, w = t.shape
    a = c // values_per_anchor
    return t.reshape(n, a, values_per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(n, h * w * a, values_per_anchor)


def score_anchors(head: nn.Module, features: Features, batch: Batch, cfg: Config) -> list[Objectness]:
    """Chapter 3. Run the RPN head on every level; one ``Objectness`` record per image.

    1. head on every level's map; 2. anchors of each level (``anchors.make_anchors``);
    3. flatten logits and deltas in the anchors' (H, W, A) order and concatenate the levels;
    4. decode every anchor with its deltas (weights ``cfg.rpn_bbox_reg_weights``, clamp
    ``cfg.bbox_xform_clip``). Same numbers as torchvision ``RegionProposalNetwork.forward``
    up to ``filter_proposals`` (which is ``longlist.select_longlist``).
    """
    maps = list(features.maps.values())
    logits_per_level, deltas_per_level = head(maps)
    shapes = features.shapes
    a_cell = anchors_per_location(cfg)
    device = maps[0].device
    anchors = torch.cat(make_anchors(features.padded_size, shapes, cfg, device=device, dtype=maps[0].dtype))
    logits = torch.cat([flatten_level(t, 1) for t in logits_per_level], dim=1)[..., 0]  # (N, A)
    deltas = torch.cat([flatten_level(t, 4) for t in deltas_per_level], dim=1)  # (N, A, 4)
    anchor_level, y, x, cell = anchor_coordinates(shapes, a_cell, device=device)
    strides = anchor_strides(features.padded_size, shapes, cfg)
    records = []
    for i in range(logits.shape[0]):
        proposals = boxes.decode(deltas[i].detach(), anchors, cfg.rpn_bbox_reg_weights, cfg.bbox_xform_clip)
        records.append(
            Objectness(
                anchors=anchors,
                logits=logits[i],
                deltas=deltas[i],
                proposals=proposals,
                anchor_level=anchor_level,
                y=y,
                x=x,
                anchor_in_cell=cell,
                num_per_level=[h * w * a_cell for h, w in shapes],
                grid_sizes=shapes,
                strides=strides,
                anchors_per_location=a_cell,
                image_size=batch.image_sizes[i],
            )
        )
    return records


# --- what chapter 3 counts (its figures draw these, minimask.viz.rpn) ---------------------------
def anchor_verdicts(rpn, gt: int) -> tuple[Tensor, list[str]]:
    """Chapter 3. For object ``gt``: every anchor's IoU with it and its verdict, one name each.

    ``rpn`` is a ``targets.RpnTargets``. Verdicts: "positive" (its best object is ``gt`` at
    IoU >= the foreground threshold), "best anchor" (made positive for ``gt`` by the
    low-quality rule), "other object" (positive, for another object), "ignored", "negative".
    """
    iou = boxes.iou(rpn.gt_boxes[gt : gt + 1], rpn.anchors)[0]
    m = rpn.match
    names = []
    for label, gt_index, low in zip(m.label.tolist(), m.gt_index.tolist(), m.low_quality.tolist(), strict=True):
        if label == 1:
            names.append(("best anchor" if low else "positive") if gt_index == gt else "other object")
        else:
            names.append("ignored" if label == -1 else "negative")
    return iou, names


def best_covering_anchors(obj: Objectness, gt_boxes: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """Chapter 3. Per box of ``gt_boxes``: the row of the highest-logit anchor whose decoded
    box (``obj.proposals``) covers it at IoU >= ``iou_threshold``; -1 where none does.

    ``Tensor[G]`` int64. The anchor the RPN itself would rank first for that object: its level
    says which anchor size found it.
    """
    if len(gt_boxes) == 0:
        return torch.zeros(0, dtype=torch.int64, device=obj.logits.device)
    overlap = boxes.iou(gt_boxes.to(obj.proposals.dtype), obj.proposals.detach())  # (G, A)
    masked = torch.where(overlap >= iou_threshold, obj.logits.detach(), -torch.inf)
    rows = masked.argmax(1)
    return torch.where(overlap.max(1).values >= iou_threshold, rows, -1)

"""Box maths shared by every chapter: IoU, delta encoding/decoding, clipping, small boxes.

Boxes are ``Tensor[N, 4]`` in (x1, y1, x2, y2) pixels; width = x2 - x1 (no "+1").
Each function is tested against its torchvision twin (``tests/test_boxes.py``):
``ops.box_iou``, ``detection._utils.BoxCoder``, ``ops.clip_boxes_to_image`` and
``ops.remove_small_boxes``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# torchvision detection/_utils.py BoxCoder(bbox_xform_clip=math.log(1000.0 / 16));
# Detectron2 box_regression.py _DEFAULT_SCALE_CLAMP: the same number.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def area(boxes: Tensor) -> Tensor:
    """``Tensor[N]``: (x2 - x1) * (y2 - y1); negative for inverted boxes, as torchvision."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Chapter 3. IoU of every pair: ``Tensor[N, 4], Tensor[M, 4] -> Tensor[N, M]``.

    Intersection over union. A pair of zero-area boxes gives 0/0 = NaN, as in
    ``torchvision.ops.box_iou``; callers that match boxes must keep such boxes out.
    """
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])  # [N, M, 2]
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])  # [N, M, 2]
    wh = (bottom_right - top_left).clamp(min=0)  # no overlap -> 0
    inter = wh[..., 0] * wh[..., 1]
    union = area(boxes1)[:, None] + area(boxes2)[None, :] - inter
    return inter / union


def encode(
    targets: Tensor, anchors: Tensor, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
) -> Tensor:
    """Chapter 3. Deltas (dx, dy, dw, dh) that move each anchor onto its target.

    dx = wx * (target centre x - anchor centre x) / anchor width, dw = ww * log(target width
    / anchor width), and the same for y and h. ``Tensor[..., 4], Tensor[..., 4] ->
    Tensor[..., 4]`` (broadcast). torchvision ``encode_boxes``; Detectron2
    ``Box2BoxTransform.get_deltas`` computes the same numbers.
    """
    wx, wy, ww, wh = weights
    aw = anchors[..., 2] - anchors[..., 0]
    ah = anchors[..., 3] - anchors[..., 1]
    ax = anchors[..., 0] + 0.5 * aw
    ay = anchors[..., 1] + 0.5 * ah
    tw = targets[..., 2] - targets[..., 0]
    th = targets[..., 3] - targets[..., 1]
    tx = targets[..., 0] + 0.5 * tw
    ty = targets[..., 1] + 0.5 * th
    return torch.stack(
        (wx * (tx - ax) / aw, wy * (ty - ay) / ah, ww * torch.log(tw / aw), wh * torch.log(th / ah)), dim=-1
    )


def decode(
    deltas: Tensor,
    anchors: Tensor,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    clamp: float = DEFAULT_SCALE_CLAMP,
) -> Tensor:
    """Chapter 3. Apply deltas to anchors: the inverse of ``encode``.

    ``Tensor[..., 4]`` deltas and anchors (broadcast; e.g. deltas ``[P, K, 4]`` with anchors
    ``[P, 1, 4]`` for class-specific refinement) -> boxes ``Tensor[..., 4]``. dw and dh,
    after division by their weights, are clamped from above at ``clamp`` (log(1000/16) in
    torchvision and Detectron2) so that one wild delta cannot make an enormous box; there
    is no lower clamp. Mirrors torchvision ``BoxCoder.decode_single`` operation by operation
    so that results agree to the last bit.
    """
    anchors = anchors.to(deltas.dtype)
    wx, wy, ww, wh = weights
    widths = anchors[..., 2] - anchors[..., 0]
    heights = anchors[..., 3] - anchors[..., 1]
    ctr_x = anchors[..., 0] + 0.5 * widths
    ctr_y = anchors[..., 1] + 0.5 * heights
    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    dw = (deltas[..., 2] / ww).clamp(max=clamp)
    dh = (deltas[..., 3] / wh).clamp(max=clamp)
    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    # half-sizes computed as torchvision does (0.5 * size), for bitwise-equal corners
    half_w = 0.5 * (torch.exp(dw) * widths)
    half_h = 0.5 * (torch.exp(dh) * heights)
    return torch.stack((pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h), dim=-1)


def clip(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Chapter 4. Clamp corners into the image: x to [0, width], y to [0, height].

    ``image_size`` is (height, width), torchvision's order. torchvision
    ``ops.clip_boxes_to_image``; Detectron2 ``Boxes.clip``.
    """
    height, width = image_size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def remove_small(boxes: Tensor, min_size: float) -> Tensor:
    """Chapter 4. Indices of boxes whose width and height are both >= ``min_size``.

    Returns ``Tensor[K]`` int64 in increasing order, as torchvision ``ops.remove_small_boxes``.
    A NaN side fails the test and is removed.
    """
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return torch.where((w >= min_size) & (h >= min_size))[0]


def nms_suppressors(boxes: Tensor, scores: Tensor, groups: Tensor, keep: Tensor, threshold: float) -> Tensor:
    """Chapters 4 and 6. Who removed whom in ``torchvision.ops.batched_nms(boxes, scores, groups, threshold)``.

    ``keep`` is what ``batched_nms`` returned (best first). Returns ``Tensor[N]`` int64: for
    each removed box, the index of the kept box that suppressed it; -1 for kept boxes.

    Greedy NMS visits boxes best first and removes a box when a kept box visited before it
    overlaps it by IoU > ``threshold``; so the suppressor is the first kept box (in ``keep``
    order) of the same group, scoring at least as high, above the threshold. The IoU is the one
    torchvision's kernel computes (``csrc/ops/cpu/nms_kernel.cpp``): float arithmetic of the
    boxes it was given, which for up to 1,000 boxes on the CPU are the boxes shifted by
    ``group * (max coordinate + 1)`` (``ops/boxes.py`` ``_batched_nms_coordinate_trick``), and
    a comparison with the threshold in double precision. Computed group by group.
    """
    out = torch.full((len(boxes),), -1, dtype=torch.int64, device=boxes.device)
    if len(keep) == len(boxes):
        return out
    if boxes.numel() <= (4000 if boxes.device.type == "cpu" else 100_000):  # the coordinate trick's boxes
        offsets = groups.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
        boxes = boxes + offsets[:, None]
    removed = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    removed[keep] = False
    lost_all = torch.where(removed)[0]
    for g in torch.unique(groups[lost_all]).tolist():
        lost = lost_all[groups[lost_all] == g]
        kept = keep[groups[keep] == g]  # still best first
        if len(kept) == 0:
            continue
        above = iou(boxes[lost], boxes[kept]).double() > threshold
        above &= scores[kept][None, :] >= scores[lost][:, None]
        first = above.to(torch.uint8).argmax(dim=1)
        out[lost] = torch.where(above.any(dim=1), kept[first], torch.full_like(first, -1))
    return out

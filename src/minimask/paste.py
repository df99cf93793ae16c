"""Chapter 7. Pasting: each detection's M x M mask resampled into the image.

Two rules (``cfg.mask_paste``): torchvision's ``paste_masks_in_image`` (``roi_heads.py``:
``expand_masks``, ``expand_boxes``, ``paste_mask_in_image``), the default for parity, and a
sub-pixel paste as Detectron2's ``_do_paste_mask`` (``layers/mask_ops.py``). Both are written
as separable interpolation weights applied to windows of the image, a few batched matrix
products for all detections (see ``paste_masks``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from minimask.config import Config

# Detections are pasted in groups of similar window size, so that padding every window of a
# group to the group's largest costs little (see _paste_windows).
PASTE_GROUP = 16


def paste_boxes(boxes: Tensor, from_size: tuple[int, int], to_size: tuple[int, int], cfg: Config) -> Tensor:
    """Chapter 7. Boxes of the resized image mapped to the original one for the sub-pixel paste.

    The resize (bilinear, align_corners=False) maps pixel centres: centre ``x + 0.5`` of the
    original lands on ``(x + 0.5) * s`` in the resized image. A model whose RoIAlign reads
    pixel ``p`` at coordinate ``p`` (``roi_aligned=False``, torchvision's) has its boxes in
    that convention, so the exact map back is ``(x + 0.5) / s - 0.5``, not torchvision's
    plain ``x / s`` (``transform.resize_boxes``, kept for the reported boxes, for parity).
    With ``roi_aligned=True`` coordinates are continuous and ``x / s`` is exact. On the
    shapes val split the shipped model's sub-pixel mask AP is 0.859 this way and 0.835 with
    the plain ratio.
    """
    shift = 0.0 if cfg.roi_aligned else 0.5
    ratio_h = float(to_size[0]) / float(from_size[0])
    ratio_w = float(to_size[1]) / float(from_size[1])
    scale = boxes.new_tensor([ratio_w, ratio_h, ratio_w, ratio_h])
    return (boxes + shift) * scale - shift


def paste_masks(masks: Tensor, boxes: Tensor, image_size: tuple[int, int], cfg: Config) -> Tensor:
    """Chapter 7. Resample each box's M x M mask into an image of ``image_size``.

    ``masks``: ``Tensor[D, M, M]`` (or ``[D, 1, M, M]``) probabilities; ``boxes``:
    ``Tensor[D, 4]`` in the pixels of the image pasted into; returns ``Tensor[D, 1, H, W]``,
    zero outside each box's reach. ``cfg.mask_paste`` picks the rule:

    - "torchvision" (default, for parity): torchvision ``paste_masks_in_image``. The mask
      gets a border of ``cfg.mask_paste_padding`` zero cells (30x30), the box is enlarged by
      30/28 about its centre and truncated to integers, the padded mask is resized bilinearly
      (align_corners=False) to (y2 - y1 + 1) x (x2 - x1 + 1) pixels and copied in.
    - "subpixel": as Detectron2 ``_do_paste_mask`` (GPU path, whole image): every pixel
      centre is mapped into the continuous box and the M x M mask is sampled there
      bilinearly (``grid_sample``, align_corners=False, zeros outside the mask).

    Difference: torchvision resizes and pastes one mask at a time; here each rule is written
    as separable interpolation weights, ``mask_window = Wy @ mask @ Wx^T`` (``Wy``, ``Wx``
    having two non-zero taps per row), computed for groups of detections with one batched
    matrix product and restricted to the window each mask can reach. The values agree with
    torchvision's to float rounding (<= 1e-6).
    """
    if masks.dim() == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"paste_masks: masks must be [D, M, M] or [D, 1, M, M], got {tuple(masks.shape)}")
        masks = masks[:, 0]
    if masks.dim() != 3 or boxes.dim() != 2 or boxes.shape[-1] != 4 or len(masks) != len(boxes):
        raise ValueError(
            f"paste_masks: need masks [D, M, M] and boxes [D, 4], got {tuple(masks.shape)} and {tuple(boxes.shape)}"
        )
    height, width = int(image_size[0]), int(image_size[1])
    out = masks.new_zeros((len(masks), 1, height, width))
    if len(masks) == 0:
        return out
    if cfg.mask_paste == "torchvision":
        padded = F.pad(masks, (cfg.mask_paste_padding,) * 4)
        x_axis, y_axis = _torchvision_weights(boxes, masks.shape[-1], cfg.mask_paste_padding, (height, width))
    else:
        padded = masks
        # the pixel convention of the RoIAlign that made the mask targets (see _subpixel_weights)
        offset = 0.5 if cfg.roi_aligned or cfg.paste_pixel_centre == "half" else 0.0
        x_axis, y_axis = _subpixel_weights(boxes, masks.shape[-1], (height, width), offset)
    _paste_windows(out, padded, x_axis, y_axis)
    return out


# One axis of a paste: window start (D,) and length (D,) in image pixels, and the weights
# (D, L, n_in) that map the mask's n_in cells onto the L >= length pixels of the window.
Axis = tuple[Tensor, Tensor, Tensor]


def _torchvision_weights(boxes: Tensor, side: int, padding: int, image_size: tuple[int, int]) -> tuple[Axis, Axis]:
    """Per-axis (x, then y) window and bilinear weights of torchvision's paste.

    ``expand_masks``/``expand_boxes``/``paste_mask_in_image`` (roi_heads.py): enlarge the box
    by (M + 2 * padding) / M about its centre, truncate to int64, paste (x2 - x1 + 1) x
    (y2 - y1 + 1) pixels (at least 1) clipped to the image.
    """
    scale = float(side + 2 * padding) / side
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    cx = (boxes[:, 2] + boxes[:, 0]) * 0.5
    cy = (boxes[:, 3] + boxes[:, 1]) * 0.5
    corners = torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=1).to(torch.int64)
    n_in = side + 2 * padding
    per_axis = []
    for lo, hi, limit in ((corners[:, 0], corners[:, 2], image_size[1]), (corners[:, 1], corners[:, 3], image_size[0])):
        size = (hi - lo + 1).clamp(min=1)  # resized mask length, torchvision's "+ 1"
        start = lo.clamp(min=0)
        stop = torch.minimum(hi + 1, torch.full_like(hi, limit))
        length = (stop - start).clamp(min=0)
        per_axis.append((start, length, _resize_weights(start - lo, size, length, n_in)))
    return per_axis[0], per_axis[1]


def _resize_weights(offset: Tensor, size: Tensor, length: Tensor, n_in: int) -> Tensor:
    """``Tensor[D, L, n_in]``: rows of ``F.interpolate(bilinear, align_corners=False)`` weights.

    Row ``j`` of detection ``d`` gives output pixel ``offset[d] + j`` of a length-``n_in``
    signal resized to ``size[d]``; rows ``j >= length[d]`` are zero (outside the window).
    The arithmetic is ATen's ``area_pixel_compute_source_index`` +
    ``guard_index_and_lambda`` (UpSample.h): scale = n_in / size in float32, source =
    scale * (dst + 0.5) - 0.5 clamped at 0, index = floor, lambda = source - index.
    ATen's vectorised CPU kernel evaluates the source with a fused multiply-add (one
    rounding); the product is formed here in float64 (exact) and rounded once to match it.
    Measured on CPU: outputs then agree to 1 ulp; with two roundings, to about 8 ulp.
    """
    longest = int(length.max())
    j = torch.arange(longest, device=offset.device)
    dst = (offset[:, None] + j[None, :]).to(torch.float64) + 0.5
    scale = (torch.tensor(float(n_in), dtype=torch.float32, device=offset.device) / size.to(torch.float32)).double()
    src = (scale[:, None] * dst - 0.5).to(torch.float32).clamp(min=0)
    i0 = src.floor().clamp(max=n_in - 1)
    lam1 = (src - i0).clamp(0, 1)
    inside = (j[None, :] < length[:, None]).to(src.dtype)
    return _two_taps(i0.to(torch.int64), (1 - lam1) * inside, lam1 * inside, n_in, drop_outside=False)


def _subpixel_weights(boxes: Tensor, side: int, image_size: tuple[int, int], offset: float = 0.5) -> tuple[Axis, Axis]:
    """Per-axis (x, then y) window and weights of sampling the mask at each pixel.

    Detectron2 ``_do_paste_mask``: pixel ``p`` sits at ``p + offset`` and maps to
    ``g = (p + offset - x1) / (x2 - x1) * 2 - 1``; ``grid_sample`` (align_corners=False)
    reads mask coordinate ``u = ((g + 1) * M - 1) / 2`` with taps floor(u), floor(u) + 1,
    each zero outside [0, M - 1]. A pixel is reached while -1 < u < M, i.e. within half a
    mask cell of the box.

    ``offset`` must be the convention of the RoIAlign that made the mask targets, so that the
    paste inverts it. Detectron2's ROIAlignV2 (aligned=True) puts pixel p's centre at p + 0.5,
    so it pastes at 0.5. torchvision's ``roi_align(aligned=False)`` reads pixel p at coordinate
    p, so a model trained on torchvision's targets (``project_masks_on_boxes``) learned masks
    half a pixel up and left of Detectron2's convention; ``paste_masks`` uses offset 0 for it
    (``cfg.paste_pixel_centre`` "roi_align"; Detectron2 pastes at 0.5 whatever its pooler:
    "half").
    On the shapes val split, ground-truth masks through the 28x28 target and this paste
    reach mask AP 0.993 with offset 0 and 0.892 with 0.5 (``minimask.evaluate --ceiling``).
    """
    per_axis = []
    for lo, hi, limit in ((boxes[:, 0], boxes[:, 2], image_size[1]), (boxes[:, 1], boxes[:, 3], image_size[0])):
        reach = (hi - lo) / (2 * side) + 1  # half a mask cell, plus a pixel of slack
        start = torch.floor(lo - reach).clamp(0, limit).to(torch.int64)
        stop = torch.ceil(hi + reach).clamp(0, limit).to(torch.int64)
        length = (stop - start).clamp(min=0)
        longest = int(length.max())
        j = torch.arange(longest, device=boxes.device)
        centre = (start[:, None] + j[None, :]).to(boxes.dtype) + offset
        extent = (hi - lo).clamp(min=1e-6)  # a zero-width box reaches no pixel (instead of 0 / 0)
        g = (centre - lo[:, None]) / extent[:, None] * 2 - 1
        u = ((g + 1) * side - 1) / 2
        i0 = u.floor()
        lam1 = u - i0
        inside = (j[None, :] < length[:, None]).to(u.dtype)
        weights = _two_taps(i0.to(torch.int64), (1 - lam1) * inside, lam1 * inside, side, drop_outside=True)
        per_axis.append((start, length, weights))
    return per_axis[0], per_axis[1]


def _two_taps(i0: Tensor, w0: Tensor, w1: Tensor, n_in: int, drop_outside: bool) -> Tensor:
    """Dense ``Tensor[D, L, n_in]`` from taps ``i0`` (weight ``w0``) and ``i0 + 1`` (``w1``).

    ``drop_outside``: a tap outside [0, n_in - 1] reads zero (grid_sample's zero padding);
    otherwise the second tap is clamped onto the last element (F.interpolate's edge rule).
    """
    i1 = i0 + 1
    if drop_outside:
        w0 = torch.where((i0 >= 0) & (i0 < n_in), w0, torch.zeros_like(w0))
        w1 = torch.where((i1 >= 0) & (i1 < n_in), w1, torch.zeros_like(w1))
    i0 = i0.clamp(0, n_in - 1)
    i1 = i1.clamp(0, n_in - 1)
    weights = w0.new_zeros((*w0.shape, n_in))
    weights.scatter_add_(2, i0[..., None], w0[..., None])
    weights.scatter_add_(2, i1[..., None], w1[..., None])
    return weights


def _paste_windows(out: Tensor, masks: Tensor, x_axis: Axis, y_axis: Axis) -> None:
    """Write ``wy[d] @ masks[d] @ wx[d]^T`` into the window of detection d in ``out[d, 0]``.

    Detections are sorted by window area and taken in groups of ``PASTE_GROUP``; each group
    is one pair of batched matrix products over the group's largest window (rows and columns
    past a detection's own window have zero weight). Only the windows are computed; the rest
    of ``out`` stays zero.
    """
    (x0, cols, wx), (y0, rows, wy) = x_axis, y_axis
    order = torch.argsort(rows * cols, descending=True)
    for group in order.split(PASTE_GROUP):
        h, w = int(rows[group].max()), int(cols[group].max())
        if h == 0 or w == 0:
            continue  # an empty window (box out of the image): nothing to write
        window = torch.bmm(wy[group, :h], torch.bmm(masks[group], wx[group, :w].transpose(1, 2)))
        for k, (d, top, hd, left, wd) in enumerate(
            zip(
                group.tolist(),
                y0[group].tolist(),
                rows[group].tolist(),
                x0[group].tolist(),
                cols[group].tolist(),
                strict=True,
            )
        ):
            out[d, 0, top : top + hd, left : left + wd] = window[k, :hd, :wd]

"""Chapter 5. Which pyramid level each box reads, and RoIAlign on that level.

A box of any size must become a fixed grid of features (7x7 for the box head, 14x14 for the
mask head). Two decisions: the level (small boxes read the fine P2 map, large ones the coarse
P5 map), then RoIAlign on that level. torchvision ``ops/poolers.py`` (``LevelMapper``,
``_infer_scale``, ``_setup_scales``, ``MultiScaleRoIAlign``) is the oracle; RoIAlign itself is
``torchvision.ops.roi_align``.

Shape shorthand: ``R`` boxes of all images of a batch (image-major), ``C`` channels,
``S`` output side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import roi_align

from minimask.boxes import area
from minimask.config import Config

# The maps the RoI heads read: P2-P5. "pool" (P6) feeds the RPN only, in torchvision
# (faster_rcnn.py: MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], ...)) and Detectron2
# (ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]).
POOLED_MAPS: tuple[str, ...] = ("0", "1", "2", "3")

# torchvision LevelMapper(eps=1e-6): added after the log, so that a box of exactly 224 * 2**k
# pixels lands on level 4 + k despite rounding in log2.
LEVEL_EPS = 1e-6
# Detectron2 assign_boxes_to_levels adds 1e-8 inside the log instead (cfg.level_eps_placement).
LEVEL_EPS_D2 = 1e-8


@dataclass(frozen=True)
class Pooled:
    """Chapter 5. RoIAlign features of every box of a batch, and where each came from."""

    features: Tensor  # (R, C, S, S) pooled features, rows image-major
    roi_level: Tensor  # (R,) int64 map pooled, index into ``names``: 0 = P2 (stride 4) ... 3 = P5
    image_index: Tensor  # (R,) int64 image each row belongs to
    box_index: Tensor  # (R,) int64 row of the box within its image's boxes: the lineage link
    boxes: Tensor  # (R, 4) the pooled boxes, xyxy pixels of the resized image
    names: tuple[str, ...]  # the feature maps pooled, finest first
    scales: tuple[float, ...]  # spatial scale of each map (1/4 ... 1/32)
    levels: tuple[int, int]  # (k_min, k_max): pyramid levels of the first and last map (2, 5)


def infer_scale(feature_size: Sequence[int], image_size: Sequence[int]) -> float:
    """Chapter 5. The map's scale relative to the image, as a power of two.

    ``feature_size`` and ``image_size`` are (height, width); torchvision ``_infer_scale``
    uses the heights only: ``2 ** round(log2(feature_h / image_h))``, the log taken in
    float32 as there.
    """
    approx = float(feature_size[0]) / float(image_size[0])
    return 2.0 ** float(torch.tensor(approx).log2().round())


def level_range(scales: Sequence[float]) -> tuple[int, int]:
    """Chapter 5. Pyramid levels (k_min, k_max) of the finest and coarsest pooled maps.

    A map of scale 2**-k is level k (1/4 -> 2, 1/32 -> 5); torchvision ``_setup_scales``.
    """
    k_min = -torch.log2(torch.tensor(scales[0], dtype=torch.float32)).item()
    k_max = -torch.log2(torch.tensor(scales[-1], dtype=torch.float32)).item()
    return int(k_min), int(k_max)


def assign_levels(boxes: Tensor, cfg: Config, k_min: int = 2, k_max: int = 5) -> Tensor:
    """Chapter 5. The pyramid level each box is pooled from (FPN paper, eq. 1).

    ``k = floor(canonical_level + log2(sqrt(area) / canonical_scale) + 1e-6)``, clamped to
    ``[k_min, k_max]``: a 224x224 box reads level 4 (P4), each halving of its side one level
    finer. ``Tensor[R, 4] -> Tensor[R]`` int64, returned as ``k - k_min`` (0 = the finest
    map), as torchvision ``LevelMapper.__call__``. Detectron2 ``assign_boxes_to_levels``
    adds its epsilon (1e-8) inside the log instead; the levels agree except within
    rounding of a power-of-two boundary.
    """
    side = torch.sqrt(area(boxes))
    if cfg.level_eps_placement == "inside_log":  # Detectron2 assign_boxes_to_levels
        level = torch.floor(cfg.canonical_level + torch.log2(side / cfg.canonical_scale + LEVEL_EPS_D2))
        return torch.clamp(level, min=k_min, max=k_max).to(torch.int64) - k_min
    eps = torch.tensor(LEVEL_EPS, dtype=side.dtype)
    level = torch.floor(cfg.canonical_level + torch.log2(side / cfg.canonical_scale) + eps)
    level = torch.clamp(level, min=k_min, max=k_max)
    return level.to(torch.int64) - k_min


def _no_boxes(levels: Sequence[Tensor], output_size: int, names: Sequence[str]) -> Pooled:
    """The ``Pooled`` of a batch of no images: every field empty."""
    empty = torch.zeros(0, dtype=torch.int64, device=levels[0].device)
    return Pooled(
        features=levels[0].new_zeros((0, levels[0].shape[1], output_size, output_size)),
        roi_level=empty,
        image_index=empty,
        box_index=empty,
        boxes=levels[0].new_zeros((0, 4)),
        names=tuple(names),
        scales=(),
        levels=(0, 0),
    )


def _rois(boxes_per_image: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Chapter 5. The batch's boxes as ``roi_align`` expects them, one row (image, x1, y1, x2, y2) per box.

    Returns ``(rois (R, 5), boxes (R, 4), image_index (R,), box_index (R,))``, image-major.
    """
    boxes = torch.cat(list(boxes_per_image), dim=0)
    image_index = torch.cat(
        [torch.full((len(b),), i, dtype=torch.int64, device=boxes.device) for i, b in enumerate(boxes_per_image)]
    )
    box_index = torch.cat([torch.arange(len(b), device=boxes.device) for b in boxes_per_image])
    rois = torch.cat([image_index[:, None].to(boxes.dtype), boxes], dim=1)
    return rois, boxes, image_index, box_index


def align_per_level(
    levels: Sequence[Tensor],
    scales: Sequence[float],
    rois: Tensor,
    level: Tensor,
    output_size: int,
    sampling_ratio: int,
    cfg: Config,
) -> Tensor:
    """Chapter 5. RoIAlign of each row of ``rois`` on the map ``level`` chose for it: ``Tensor[R, C, S, S]``.

    One ``torchvision.ops.roi_align`` call per level, as ``MultiScaleRoIAlign``
    (``_multiscale_roi_align``), with ``aligned = cfg.roi_aligned``.
    """
    first = levels[0]
    features = first.new_zeros((len(rois), first.shape[1], output_size, output_size))
    for k, (fmap, scale) in enumerate(zip(levels, scales, strict=True)):
        rows = torch.where(level == k)[0]
        features[rows] = roi_align(
            fmap,
            rois[rows],
            output_size=(output_size, output_size),
            spatial_scale=scale,
            sampling_ratio=sampling_ratio,
            aligned=cfg.roi_aligned,
        ).to(features.dtype)
    return features


def roi_pool(
    maps: Mapping[str, Tensor],
    boxes_per_image: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    output_size: int,
    sampling_ratio: int,
    cfg: Config,
    names: Sequence[str] = POOLED_MAPS,
) -> Pooled:
    """Chapter 5. RoIAlign every box on the pyramid level chosen for it.

    ``maps``: feature maps ``Tensor[N, C, h_l, w_l]`` by name (``Features.maps``);
    ``boxes_per_image``: one ``Tensor[R_i, 4]`` per image in resized-image pixels;
    ``image_sizes``: resized (unpadded) (height, width) per image, used only to infer the
    scale of each map. Returns ``Pooled`` with ``features`` ``Tensor[R, C, S, S]``.

    Mirrors torchvision ``MultiScaleRoIAlign.forward`` with ``aligned = cfg.roi_aligned``
    (False in torchvision: a box is not shifted by half a pixel, and its size is at least
    one feature cell). Difference: torchvision infers the scales on its first call and caches
    them on the module; we infer them at every call (same values whenever the levels are
    powers of two apart). Detectron2 ``ROIPooler`` uses ``aligned=True`` (ROIAlignV2) and an
    adaptive sampling ratio (0).
    """
    missing = [n for n in names if n not in maps]
    if missing:
        raise ValueError(f"roi_pool: feature map(s) {missing} not in maps (have {sorted(maps)})")
    if len(boxes_per_image) != len(image_sizes):
        raise ValueError(f"roi_pool: {len(boxes_per_image)} box tensors for {len(image_sizes)} image sizes")
    levels = [maps[n] for n in names]
    if not image_sizes:  # a batch of no images: nothing to pool
        return _no_boxes(levels, output_size, names)
    # 1. the scale of each map, from the largest image in the batch (_setup_scales)
    largest = (max(s[0] for s in image_sizes), max(s[1] for s in image_sizes))
    scales = tuple(infer_scale(m.shape[-2:], largest) for m in levels)
    k_min, k_max = level_range(scales)
    # 2. one row per box; 3. the level of each box, then RoIAlign level by level
    rois, boxes, image_index, box_index = _rois(boxes_per_image)
    level = assign_levels(boxes, cfg, k_min, k_max)
    return Pooled(
        features=align_per_level(levels, scales, rois, level, output_size, sampling_ratio, cfg),
        roi_level=level,
        image_index=image_index,
        box_index=box_index,
        boxes=boxes,
        names=tuple(names),
        scales=scales,
        levels=(k_min, k_max),
    )


def canonical_side(level: int, cfg: Config) -> float:
    """Chapter 5. The box side (pixels) at which level ``level`` starts: 224 * 2**(level - 4)."""
    return cfg.canonical_scale * math.pow(2.0, level - cfg.canonical_level)

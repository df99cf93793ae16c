"""Chapter 3. Anchors: the fixed boxes every objectness logit is about.

At every cell of every pyramid level sit the same few boxes ("cell anchors"): one per
(aspect ratio, size) pair, centred on the cell's top-left pixel. The RPN never invents a
box; it scores these anchors and nudges them (``boxes.decode``). Anchor ``k`` of a level is
cell ``(y, x)`` and cell anchor ``a`` with ``k = (y * W + x) * A_cell + a``: order
(H, W, A), as torchvision and Detectron2 flatten, so RPN head outputs line up.

Mirrors torchvision ``models/detection/anchor_utils.py`` ``AnchorGenerator``
(``generate_anchors``, ``grid_anchors``, ``forward``), with the same float32 arithmetic so
that the corners are equal to the last bit. Detectron2 ``DefaultAnchorGenerator`` differs:
cell anchors are not rounded and strides are the fixed 4, 8, 16, 32, 64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minimask.config import Config


def cell_anchors(
    sizes: tuple[float, ...],
    aspect_ratios: tuple[float, ...],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Chapter 3. Zero-centred anchors of one cell: ``Tensor[len(ratios) * len(sizes), 4]``.

    For ratio r = height / width and size s: height = s * sqrt(r), width = s / sqrt(r)
    (area s^2). Corners (-w/2, -h/2, w/2, h/2) are **rounded to integers** (half to even,
    ``torch.round``), as torchvision ``AnchorGenerator.generate_anchors``: size 32 at r = 0.5
    gives 46 x 22, not 45.25 x 22.63. Rows are ratio-major: (r0, s0), (r0, s1), ..., (r1, s0).
    """
    s = torch.as_tensor(sizes, dtype=dtype, device=device)
    r = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
    h_factor = torch.sqrt(r)
    w_factor = 1 / h_factor
    widths = (w_factor[:, None] * s[None, :]).reshape(-1)
    heights = (h_factor[:, None] * s[None, :]).reshape(-1)
    half = torch.stack([-widths, -heights, widths, heights], dim=1) / 2
    return half.round()


def cell_anchors_exact(
    sizes: tuple[float, ...],
    aspect_ratios: tuple[float, ...],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Chapter 11. Cell anchors as Detectron2 ``DefaultAnchorGenerator.generate_cell_anchors``.

    For size s and ratio r = h / w: w = sqrt(s^2 / r), h = r * w, in Python floats, **not
    rounded** (size 32 at r = 0.5: 45.25 x 22.63); rows size-major: (s0, r0), (s0, r1), ...
    (torchvision: ratio-major; the same rows when each level has one size).
    """
    rows = []
    for size in sizes:
        area = size**2.0
        for ratio in aspect_ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            rows.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(rows).to(dtype=dtype, device=device)


def fixed_strides(num_levels: int) -> list[tuple[int, int]]:
    """Chapter 11. Detectron2's anchor strides: the backbone's, 4, 8, 16, 32, 64 (P2..P6)."""
    return [(2 ** (level + 2),) * 2 for level in range(num_levels)]


def anchor_strides(
    padded_size: tuple[int, int], feature_shapes: list[tuple[int, int]], cfg: Config
) -> list[tuple[int, int]]:
    """Chapter 3. The strides the anchors are laid out with: ``cfg.anchor_strides`` picks
    torchvision's ``level_strides`` ("from_sizes") or Detectron2's ``fixed_strides``."""
    if cfg.anchor_strides == "fixed":
        return fixed_strides(len(feature_shapes))
    return level_strides(padded_size, feature_shapes)


def anchors_per_location(cfg: Config) -> int:
    """Chapter 3. A_cell: cell anchors per position (sizes per level x aspect ratios)."""
    return len(cfg.anchor_sizes[0]) * len(cfg.aspect_ratios)


def level_strides(padded_size: tuple[int, int], feature_shapes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Chapter 3. (stride_y, stride_x) of each level = padded size // map size, per axis.

    torchvision ``AnchorGenerator.forward`` computes the stride per forward from the sizes,
    not from the architecture: usually 4..64, but a 13-row map of an 800-px batch gets 61.
    """
    hp, wp = padded_size
    return [(hp // h, wp // w) for h, w in feature_shapes]


def make_anchors(
    padded_size: tuple[int, int],
    feature_shapes: list[tuple[int, int]],
    cfg: Config,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[Tensor]:
    """Chapter 3. The anchors of each level: ``list[Tensor[H_l * W_l * A_cell, 4]]``, xyxy pixels.

    Level ``l`` uses sizes ``cfg.anchor_sizes[l]`` and ``cfg.aspect_ratios``; cell (y, x) is
    centred at (x * stride_x, y * stride_y), the cell's top-left corner, with no half-stride
    offset (Detectron2 config OFFSET = 0.0 too). Anchors are the same for every image of a
    batch, and may stick out of the image (neither framework drops them).
    torchvision ``AnchorGenerator.grid_anchors``.
    """
    if len(feature_shapes) != len(cfg.anchor_sizes):
        raise ValueError(
            f"{len(feature_shapes)} feature maps but Config.anchor_sizes has {len(cfg.anchor_sizes)} levels"
        )
    out = []
    strides = anchor_strides(padded_size, feature_shapes, cfg)
    make_cell = cell_anchors if cfg.round_cell_anchors else cell_anchors_exact
    for (h, w), (sy, sx), sizes in zip(feature_shapes, strides, cfg.anchor_sizes, strict=True):
        cell = make_cell(sizes, cfg.aspect_ratios, dtype=dtype, device=device)  # (A_cell, 4)
        if cfg.anchor_offset:  # Detectron2 _create_grid_offsets: arange(offset * s, W * s, step=s)
            off = cfg.anchor_offset
            cx = torch.arange(off * sx, w * sx, step=sx, dtype=torch.float32, device=device).to(dtype)
            cy = torch.arange(off * sy, h * sy, step=sy, dtype=torch.float32, device=device).to(dtype)
        else:
            cx = (torch.arange(w, device=device) * sx).to(dtype)  # centre x of each column
            cy = (torch.arange(h, device=device) * sy).to(dtype)
        grid_y, grid_x = torch.meshgrid(cy, cx, indexing="ij")  # (H, W) each
        centres = torch.stack([grid_x, grid_y, grid_x, grid_y], dim=-1).reshape(-1, 1, 4)  # (H*W, 1, 4)
        out.append((centres + cell[None]).reshape(-1, 4))  # (H*W*A_cell, 4): order (H, W, A)
    return out


def anchor_coordinates(feature_shapes: list[tuple[int, int]], a_cell: int, device: torch.device | str | None = None):
    """Chapter 3. (level, y, x, anchor_in_cell) of every anchor of the concatenated levels.

    Four ``Tensor[A]`` int64, in the order of ``torch.cat(make_anchors(...))``: the
    inverse of k = offset_l + (y * W_l + x) * A_cell + a.
    """
    levels, ys, xs, cells = [], [], [], []
    for lvl, (h, w) in enumerate(feature_shapes):
        k = torch.arange(h * w * a_cell, device=device)
        levels.append(torch.full_like(k, lvl))
        ys.append(k // (w * a_cell))
        xs.append((k // a_cell) % w)
        cells.append(k % a_cell)
    return torch.cat(levels), torch.cat(ys), torch.cat(xs), torch.cat(cells)

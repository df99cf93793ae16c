"""Chapter 2. From a list of photos to one padded batch, and back to the photos' sizes.

Mask R-CNN sees every image at about the same scale: each image is normalised with the
ImageNet mean and std, resized so that its short side is ``cfg.min_size`` (unless that
would push the long side past ``cfg.max_size``), and padded with zeros at the bottom and
right to a multiple of ``cfg.size_divisible`` (32), so that every FPN level has a whole
number of cells. Boxes found on the resized image are mapped back with ``resize_boxes``.

Mirrors torchvision ``models/detection/transform.py``: ``GeneralizedRCNNTransform``
(``normalize``, ``resize``, ``batch_images``), ``_resize_image_and_masks`` and
``resize_boxes``. Differences: ``check_images`` refuses bad input with a message naming the
image (torchvision crashes later or answers silently), uint8 images are accepted and divided
by 255 (torchvision raises ``TypeError``), and ``cfg.min_size`` is one number (torchvision
draws one of several sizes per image in training). Detectron2 resizes in the data loader
with rounding instead of flooring (480x640 -> 800x1067 there, 800x1066 here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from minimask.config import Config

# A float image whose values leave [-0.5, 1.5] is almost surely not a [0, 1] image: either
# 0-255 pixel values or an image already normalised with mean/std. The margin tolerates
# the small over- and undershoot of resampling/augmentation.
_FLOAT_MIN, _FLOAT_MAX = -0.5, 1.5


@dataclass(frozen=True)
class Batch:
    """Chapter 2. The images as the network sees them: normalised, resized, padded."""

    tensors: Tensor  # (N, 3, Hp, Wp) normalised, zero-padded; Hp, Wp multiples of cfg.size_divisible
    image_sizes: list[tuple[int, int]]  # (h, w) of each resized image before padding; boxes are clipped to it
    original_sizes: list[tuple[int, int]]  # (H, W) of each input image
    scale_factors: list[float]  # the factor each image was resized by (before flooring the size)

    @property
    def padded_size(self) -> tuple[int, int]:
        """(Hp, Wp): the size the anchors' strides are computed from."""
        return int(self.tensors.shape[-2]), int(self.tensors.shape[-1])

    def __len__(self) -> int:
        return len(self.image_sizes)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.tensors.to(device), self.image_sizes, self.original_sizes, self.scale_factors)


def check_images(images: Any) -> list[Tensor]:
    """Chapter 2. Validate a list of CHW RGB images; return them as float32 tensors in [0, 1].

    Accepted: a list (or tuple) of ``Tensor[3, H, W]``, float in [0, 1] or uint8 in 0-255
    (divided by 255, so both give the same answer). Anything else raises ``TypeError`` or
    ``ValueError`` naming the image's index and what is wrong: a bare tensor instead of a
    list, HWC or 2-D or 4-channel images, an empty image, NaN/inf values, a float image that
    looks like 0-255 (or already normalised). torchvision's ``GeneralizedRCNNTransform`` only
    checks ``dim() == 3`` and the float dtype.
    """
    if isinstance(images, Tensor):
        raise TypeError(
            f"images must be a list of Tensor[3, H, W], got a bare Tensor of shape {tuple(images.shape)}; "
            "wrap one image as [image] or a batch as list(batch)"
        )
    if not isinstance(images, (list, tuple)):
        raise TypeError(f"images must be a list of Tensor[3, H, W], got {type(images).__name__}")
    return [_check_image(image, i) for i, image in enumerate(images)]


def _check_image(image: Any, i: int) -> Tensor:
    where = f"images[{i}]"
    if not isinstance(image, Tensor):
        raise TypeError(f"{where} must be a Tensor[3, H, W], got {type(image).__name__}")
    shape = tuple(image.shape)
    if image.dim() != 3:
        raise ValueError(f"{where} must have 3 dimensions (3, H, W), got shape {shape}")
    if shape[0] != 3:
        hint = "; it looks like H x W x C: use image.permute(2, 0, 1)" if shape[-1] == 3 else ""
        hint = hint or ("; for a grey image use image.expand(3, -1, -1)" if shape[0] == 1 else "")
        hint = hint or ("; drop the alpha channel with image[:3]" if shape[0] == 4 else "")
        raise ValueError(f"{where} must have 3 (RGB) channels first, got shape {shape}{hint}")
    if shape[1] == 0 or shape[2] == 0:
        raise ValueError(f"{where} is empty: shape {shape}")
    if image.dtype == torch.uint8:
        return image.float() / 255  # torchvision expects [0, 1]; 0-255 integers are the usual file format
    if not image.is_floating_point():
        raise TypeError(f"{where} has dtype {image.dtype}; use float values in [0, 1] or uint8 in 0-255")
    image = image.float()  # the network's weights are float32
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"{where} contains NaN or inf values")
    lo, hi = float(image.min()), float(image.max())
    if hi > _FLOAT_MAX:
        raise ValueError(f"{where} has values up to {hi:g}: it looks like 0-255; divide by 255")
    if lo < _FLOAT_MIN:
        raise ValueError(
            f"{where} has values down to {lo:g}: expected [0, 1] (is it already normalised? "
            "normalisation happens inside the model)"
        )
    return image


def check_targets(images: Sequence[Tensor], targets: Any, cfg: Config) -> list[dict[str, Tensor]]:
    """Chapter 9. Validate training targets; return copies with int64 labels on the images' device.

    Each target is a dict with ``boxes`` float ``Tensor[B, 4]`` (x1, y1, x2, y2 pixels of the
    original image, x2 > x1 and y2 > y1), ``labels`` integer ``Tensor[B]`` in 1..num_classes-1
    (0 is background), ``masks`` ``Tensor[B, H, W]`` (the image's H, W; 0/1 or bool) and
    optionally ``iscrowd`` ``Tensor[B]``. Errors name the image, key and object index.
    torchvision checks less, and partly by ``assert`` (``GeneralizedRCNN.forward``: boxes shape
    and degenerate boxes; ``RoIHeads.forward``: dtypes); out-of-range labels there fail later
    with an index error or a CUDA assert.
    """
    if not isinstance(targets, (list, tuple)):
        raise TypeError(f"targets must be a list of dicts (one per image), got {type(targets).__name__}")
    if len(targets) != len(images):
        raise ValueError(f"got {len(targets)} targets for {len(images)} images")
    pairs = enumerate(zip(images, targets, strict=True))
    return [_check_target(image, t, f"targets[{i}]", cfg) for i, (image, t) in pairs]


def _check_target(image: Tensor, t: Any, where: str, cfg: Config) -> dict[str, Tensor]:
    """One image's target checked (``check_targets``); a copy on the image's device, int64 labels."""
    if not isinstance(t, dict):
        raise TypeError(f"{where} must be a dict, got {type(t).__name__}")
    for key in ("boxes", "labels", "masks"):
        if key not in t:
            raise ValueError(f"{where} has no '{key}' (Mask R-CNN needs boxes, labels and masks)")
        if not isinstance(t[key], Tensor):
            raise TypeError(f"{where}['{key}'] must be a Tensor, got {type(t[key]).__name__}")
    _check_boxes(t["boxes"], where)
    b = t["boxes"].shape[0]
    _check_labels(t["labels"], b, where, cfg)
    h, w = image.shape[-2:]
    if t["masks"].shape != (b, h, w):
        raise ValueError(
            f"{where}['masks'] must have shape [{b}, {h}, {w}] (one mask per box, image size), "
            f"got {list(t['masks'].shape)}"
        )
    if "iscrowd" in t and (not isinstance(t["iscrowd"], Tensor) or t["iscrowd"].shape != (b,)):
        raise ValueError(f"{where}['iscrowd'] must be a Tensor of shape [{b}]")
    checked = {k: (v.to(image.device) if isinstance(v, Tensor) else v) for k, v in t.items()}
    checked["labels"] = t["labels"].to(device=image.device, dtype=torch.int64)
    return checked


def _check_boxes(boxes: Tensor, where: str) -> None:
    """``Tensor[B, 4]`` float, finite, x2 > x1 and y2 > y1, or an error naming the first bad box."""
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}['boxes'] must have shape [B, 4], got {list(boxes.shape)}")
    if not boxes.is_floating_point():
        raise TypeError(f"{where}['boxes'] must be a float tensor, got {boxes.dtype}")
    bad = ~torch.isfinite(boxes).all(dim=1)
    if bad.any():
        j = int(torch.where(bad)[0][0])
        raise ValueError(f"{where}['boxes'][{j}] = {boxes[j].tolist()} is not finite")
    bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bad.any():
        j = int(torch.where(bad)[0][0])
        raise ValueError(
            f"{where}['boxes'][{j}] = {boxes[j].tolist()} is degenerate: boxes are (x1, y1, x2, y2) "
            "with x2 > x1 and y2 > y1"
        )


def _check_labels(labels: Tensor, b: int, where: str, cfg: Config) -> None:
    """``Tensor[b]`` of integers in 1..num_classes-1, or an error naming the first bad label."""
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"{where}['labels'] must be an integer tensor, got {labels.dtype}")
    if labels.shape != (b,):
        raise ValueError(f"{where}['labels'] must have shape [{b}] (one per box), got {list(labels.shape)}")
    bad = (labels < 1) | (labels >= cfg.num_classes)
    if bad.any():
        j = int(torch.where(bad)[0][0])
        raise ValueError(
            f"{where}['labels'][{j}] = {int(labels[j])} is out of range: must be in 1..{cfg.num_classes - 1} "
            f"(0 is background; cfg.num_classes = {cfg.num_classes} includes it)"
        )


def resized_size(size: tuple[int, int], cfg: Config) -> tuple[tuple[int, int], float]:
    """Chapter 2. ((h, w), scale): the size an image of ``size`` (H, W) is resized to.

    scale = min(min_size / short side, max_size / long side); the new size is floored,
    as ``F.interpolate(scale_factor=..., recompute_scale_factor=True)`` does in
    torchvision ``_resize_image_and_masks`` (Detectron2 rounds).
    """
    h, w = size
    scale = min(cfg.min_size / min(h, w), cfg.max_size / max(h, w))
    if cfg.resize_rounding == "round":
        return _rounded_size(h, w, cfg), scale
    return (math.floor(h * scale), math.floor(w * scale)), scale


def _rounded_size(h: int, w: int, cfg: Config) -> tuple[int, int]:
    """Detectron2 ``ResizeShortestEdge.get_output_shape``, its arithmetic step by step.

    The short side becomes ``min_size`` exactly, the long side ``scale * side``; if the long
    side passes ``max_size`` both are scaled down again; then each is rounded, int(x + 0.5).
    """
    size = cfg.min_size * 1.0
    scale = size / min(h, w)
    newh, neww = (size, scale * w) if h < w else (scale * h, size)
    if max(newh, neww) > cfg.max_size:
        scale = cfg.max_size * 1.0 / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def normalize(image: Tensor, cfg: Config) -> Tensor:
    """Chapter 2. (image - mean) / std per channel; torchvision ``GeneralizedRCNNTransform.normalize``."""
    mean = torch.as_tensor(cfg.image_mean, dtype=image.dtype, device=image.device)
    std = torch.as_tensor(cfg.image_std, dtype=image.dtype, device=image.device)
    return (image - mean[:, None, None]) / std[:, None, None]


def to_pixels(image: Tensor, cfg: Config) -> Tensor:
    """Chapter 11. An RGB [0, 1] image in the units and channel order the weights expect.

    ``cfg.input_channels`` "BGR" reverses the channels, ``cfg.input_scale`` 255 gives 0-255
    values (Detectron2's ``INPUT.FORMAT``, ``MODEL.PIXEL_MEAN``); torchvision's RGB and 1.0
    return the image itself.
    """
    if cfg.input_channels == "BGR":
        image = image.flip(0)
    if cfg.input_scale != 1.0:
        image = image * cfg.input_scale
    return image


def pil_resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Chapter 11. Detectron2 ``ResizeTransform.apply_image`` on uint8: PIL bilinear to (h, w).

    ``image``: RGB in [0, 1] (as ``check_images`` returns it), made uint8 by rounding x * 255
    (exact for images read from 8-bit files). Returns ``Tensor[3, h, w]`` float32 of 0-255
    values, as ``DefaultPredictor`` hands them to the model. PIL antialiases when shrinking.
    """
    import numpy as np
    from PIL import Image

    pixels = (image * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    resized = Image.fromarray(np.ascontiguousarray(pixels)).resize((size[1], size[0]), Image.BILINEAR)
    return torch.from_numpy(np.asarray(resized).astype("float32").transpose(2, 0, 1).copy()).to(image.device)


def resize_after(image: Tensor, cfg: Config) -> tuple[Tensor, float]:
    """Chapter 11. Detectron2's order: resize the pixels, then normalise (``cfg.normalize_before_resize`` False).

    ``DefaultPredictor`` resizes the uint8 BGR image (``cfg.resize_interpolation``
    "pil_bilinear") to the rounded size (``cfg.resize_rounding``); ``GeneralizedRCNN.
    preprocess_image`` then subtracts ``PIXEL_MEAN`` and divides by ``PIXEL_STD``.
    """
    (h, w), scale = resized_size((image.shape[-2], image.shape[-1]), cfg)
    if cfg.resize_interpolation == "pil_bilinear":
        pixels = pil_resize(image, (h, w))  # 0-255
        pixels = pixels.flip(0) if cfg.input_channels == "BGR" else pixels
        if cfg.input_scale != 255.0:
            pixels = pixels / 255.0 * cfg.input_scale
    else:
        pixels = F.interpolate(to_pixels(image, cfg)[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return normalize(pixels, cfg), scale


def resize_image(image: Tensor, cfg: Config) -> tuple[Tensor, float]:
    """Chapter 2. Bilinear resize (align_corners=False, no antialias) of a CHW image.

    Same call as torchvision ``_resize_image_and_masks``: the scale factor is given and
    recomputed from the floored output size, so the sampling grid is output/input exactly.
    """
    size, scale = resized_size((image.shape[-2], image.shape[-1]), cfg)
    if cfg.resize_rounding == "round":  # Detectron2's size is not floor(side * scale): resize to it
        return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0], scale
    out = F.interpolate(
        image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
    )
    return out[0], scale


def pad_batch(images: list[Tensor], size_divisible: int) -> Tensor:
    """Chapter 2. Stack CHW images into ``Tensor[N, 3, Hp, Wp]``, zero-padded bottom/right.

    Hp, Wp = the largest height and width in the batch, rounded up to a multiple of
    ``size_divisible``; torchvision ``GeneralizedRCNNTransform.batch_images``.
    """
    hp = math.ceil(max(im.shape[-2] for im in images) / size_divisible) * size_divisible
    wp = math.ceil(max(im.shape[-1] for im in images) / size_divisible) * size_divisible
    batch = images[0].new_zeros((len(images), images[0].shape[0], hp, wp))
    for i, im in enumerate(images):
        batch[i, :, : im.shape[-2], : im.shape[-1]] = im
    return batch


def preprocess(images: list[Tensor], cfg: Config) -> Batch:
    """Chapter 2. Check, normalise, resize and pad a list of images into one ``Batch``.

    1. ``check_images`` (uint8 -> float / 255); 2. normalise **before** resizing, as
    torchvision; 3. resize each image; 4. pad the batch to a multiple of 32. Same numbers as
    torchvision ``GeneralizedRCNNTransform.forward`` in eval mode. An empty list gives a
    batch of no images, ``Tensor[0, 3, d, d]`` with d = ``cfg.size_divisible``, so that
    every later stage runs and returns empty lists (torchvision raises ``IndexError``).
    """
    checked = check_images(images)
    if not checked:
        d = cfg.size_divisible
        return Batch(torch.zeros(0, 3, d, d), [], [], [])
    resized, scales = [], []
    for i, image in enumerate(checked):
        (h, w), _ = resized_size((image.shape[-2], image.shape[-1]), cfg)
        if h == 0 or w == 0:  # torchvision's interpolate fails with a RuntimeError here
            raise ValueError(
                f"images[{i}] of size {tuple(image.shape[-2:])} would be resized to {h}x{w}: its aspect ratio is "
                f"too extreme for min_size={cfg.min_size}, max_size={cfg.max_size}"
            )
        if cfg.normalize_before_resize:
            image, scale = resize_image(normalize(to_pixels(image, cfg), cfg), cfg)
        else:
            image, scale = resize_after(image, cfg)
        resized.append(image)
        scales.append(scale)
    return Batch(
        tensors=pad_batch(resized, cfg.size_divisible),
        image_sizes=[(int(im.shape[-2]), int(im.shape[-1])) for im in resized],
        original_sizes=[(int(im.shape[-2]), int(im.shape[-1])) for im in checked],
        scale_factors=scales,
    )


def resize_boxes(boxes: Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> Tensor:
    """Chapter 2. Scale ``Tensor[B, 4]`` xyxy boxes from an image of ``from_size`` to ``to_size``.

    Per axis, ratio = new size / old size (float32, as torchvision ``transform.resize_boxes``):
    used for targets (original -> resized) and for detections (resized -> original). No
    clipping: the ratio maps [0, old] exactly onto [0, new].
    """
    ratio_h = torch.tensor(to_size[0], dtype=torch.float32, device=boxes.device) / torch.tensor(
        from_size[0], dtype=torch.float32, device=boxes.device
    )
    ratio_w = torch.tensor(to_size[1], dtype=torch.float32, device=boxes.device) / torch.tensor(
        from_size[1], dtype=torch.float32, device=boxes.device
    )
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=-1)


def boxes_to_original(boxes: Tensor, from_size: tuple[int, int], to_size: tuple[int, int], cfg: Config) -> Tensor:
    """Chapter 11. Detections mapped from the resized image back to the original one.

    torchvision (``cfg.clip_to_original`` False): ``resize_boxes``, no clipping
    (``GeneralizedRCNNTransform.postprocess``). Detectron2 (True): ``detector_postprocess``
    multiplies by ``output size / resized size`` (a Python float, ``Boxes.scale``) and clips
    to the original image (``Boxes.clip``).
    """
    if not cfg.clip_to_original:
        return resize_boxes(boxes, from_size, to_size)
    scale_x = to_size[1] / from_size[1]
    scale_y = to_size[0] / from_size[0]
    scaled = boxes * boxes.new_tensor([scale_x, scale_y, scale_x, scale_y])
    height, width = to_size
    x = scaled[..., 0::2].clamp(min=0, max=width)
    y = scaled[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def resize_target(target: dict[str, Tensor], from_size: tuple[int, int], to_size: tuple[int, int]) -> dict[str, Tensor]:
    """Chapter 2. A training target resized with its image: boxes scaled, masks nearest.

    Returns a new dict (other keys unchanged). ``masks`` ``Tensor[B, H, W]`` become uint8
    ``Tensor[B, h, w]`` by nearest-neighbour sampling, as torchvision
    ``_resize_image_and_masks`` does (its scale factor is recomputed from the sizes, so
    resampling to ``to_size`` is the same grid).
    """
    out = dict(target)
    if "boxes" in target:
        out["boxes"] = resize_boxes(target["boxes"], from_size, to_size)
    if "masks" in target:
        masks = target["masks"]
        if masks.shape[0] == 0:
            out["masks"] = masks.new_zeros((0, *to_size), dtype=torch.uint8)
        else:
            resized = F.interpolate(masks[:, None].float(), size=tuple(to_size), mode="nearest")
            out["masks"] = resized[:, 0].byte()
    return out

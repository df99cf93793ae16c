"""Chapter 7. Which pixels of each detection belong to its object.

For every detection the mask head reads a 14x14 RoIAlign of the detection's (refined) box,
predicts 28x28 logits for every class, and keeps the channel of the detected class. The
sigmoid of those logits is a soft mask over the box, which is then pasted into the
original image. torchvision ``MaskRCNNHeads``, ``MaskRCNNPredictor``
(``models/detection/mask_rcnn.py``), ``maskrcnn_inference`` and ``paste_masks_in_image``
(``roi_heads.py``) are the oracle.

Shape shorthand: ``D`` detections, ``M`` mask side (28), ``H x W`` the original image.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from minimask.config import Config
from minimask.paste import paste_boxes, paste_masks
from minimask.pooling import roi_pool
from minimask.transform import boxes_to_original


class MaskHead(nn.Sequential):
    """Chapter 7. A stack of 3x3 conv + ReLU layers on the 14x14 RoI features.

    ``Tensor[D, C, 14, 14] -> Tensor[D, layers[-1], 14, 14]``. Keys ``{i}.0.weight``/``bias``
    as torchvision ``MaskRCNNHeads`` (each layer a ``Conv2dNormActivation`` without norm),
    with its initialisation (Kaiming normal, fan_out; zero bias).
    """

    _version = 2  # torchvision's key layout version, so its loader never renames our keys

    def __init__(
        self, in_channels: int, layers: Sequence[int], dilation: int = 1, norm: Callable[[int], nn.Module] | None = None
    ) -> None:
        blocks = []
        for width in layers:
            conv = nn.Conv2d(in_channels, width, kernel_size=3, padding=dilation, dilation=dilation, bias=norm is None)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
            # with a norm (torchvision v2, Detectron2 ROI_MASK_HEAD.NORM): conv, norm, ReLU
            blocks.append(nn.Sequential(conv, *([norm(width)] if norm else []), nn.ReLU(inplace=True)))
            in_channels = width
        super().__init__(*blocks)


class MaskPredictor(nn.Sequential):
    """Chapter 7. Upsample 14x14 -> 28x28 and predict one mask logit map per class.

    ``conv5_mask``: 2x2 transposed conv, stride 2, + ReLU; ``mask_fcn_logits``: 1x1 conv to
    K+1 channels. ``Tensor[D, C, 14, 14] -> Tensor[D, K+1, 28, 28]``; names and
    initialisation as torchvision ``MaskRCNNPredictor`` (Detectron2
    ``MaskRCNNConvUpsampleHead``: the same layers, K channels).
    """

    def __init__(self, in_channels: int, dim: int, num_classes: int) -> None:
        super().__init__(
            OrderedDict(
                conv5_mask=nn.ConvTranspose2d(in_channels, dim, kernel_size=2, stride=2, padding=0),
                relu=nn.ReLU(inplace=True),
                mask_fcn_logits=nn.Conv2d(dim, num_classes, kernel_size=1, stride=1, padding=0),
            )
        )
        for name, param in self.named_parameters():
            if "weight" in name:
                nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")


@dataclass(frozen=True)
class Segmentation:
    """Chapter 7. One image's masks: 28x28 on the box, then pasted into the original image.

    At inference the rows are the shortlist's detections (``detection_index``); in training
    they are the positive sampled RoIs (``detection_index`` is then their row in the training
    ``Classification``, and nothing is pasted: ``boxes_orig`` and ``masks`` are None).
    """

    boxes: Tensor  # (D, 4) boxes that were pooled, resized-image pixels
    detection_index: Tensor  # (D,) int64 row in the Shortlist (training: in the Classification)
    roi_level: Tensor  # (D,) int64 map each box was pooled from: 0 = P2 ... 3 = P5
    labels: Tensor  # (D,) int64 class whose channel was kept
    logits: Tensor  # (D, M, M) mask logits of that class
    probs: Tensor  # (D, M, M) sigmoid(logits): soft mask over the box
    boxes_orig: Tensor | None  # (D, 4) the boxes in original-image pixels
    masks: Tensor | None  # (D, 1, H, W) soft masks pasted into the original image, not thresholded
    image_size: tuple[int, int]  # resized (height, width)
    original_size: tuple[int, int]  # (H, W)


def paste_into_original(
    probs: Tensor, boxes: Tensor, image_size: tuple[int, int], original_size: tuple[int, int], cfg: Config
) -> tuple[Tensor, Tensor]:
    """Chapter 7. The boxes mapped to the original image and the soft masks pasted there.

    ``probs`` (D, M, M) on ``boxes`` (D, 4, resized-image pixels) -> ``(boxes_orig (D, 4),
    masks (D, 1, H, W))`` under ``cfg.mask_paste`` (and Detectron2's binary masks with
    ``cfg.binary_masks``).
    """
    boxes_orig = boxes_to_original(boxes, image_size, original_size, cfg)  # torchvision: resize_boxes
    # torchvision's paste uses the reported boxes; the sub-pixel paste maps them itself,
    # except under Detectron2's rules, which paste at the reported (clipped) boxes
    own = cfg.mask_paste == "torchvision" or cfg.clip_to_original
    paste_at = boxes_orig if own else paste_boxes(boxes, image_size, original_size, cfg)
    masks = paste_masks(probs, paste_at, original_size, cfg)
    if cfg.binary_masks:  # Detectron2 detector_postprocess: pred_masks = pasted >= 0.5
        masks = (masks >= cfg.mask_threshold).to(masks.dtype)
    return boxes_orig, masks


def class_channel(logits: Tensor, labels: Sequence[Tensor]) -> Tensor:
    """Chapter 7. Each row's logits on its class's channel: ``Tensor[D, K+1, M, M] -> Tensor[D, M, M]``.

    ``labels``: per image, the class of each row (the detected class; in training the GT
    class), images concatenated in the order of ``logits``; a class-agnostic head (one channel)
    gives every row channel 0. torchvision ``maskrcnn_inference``
    (and ``maskrcnn_loss`` in training) reads the same channel; Detectron2 takes it before
    the sigmoid too (the same values).
    """
    all_labels = torch.cat(list(labels)) if labels else logits.new_zeros(0, dtype=torch.int64)
    if logits.shape[1] == 1:  # class-agnostic mask (Detectron2 CLS_AGNOSTIC_MASK): one channel for all
        all_labels = torch.zeros_like(all_labels)
    return logits[torch.arange(len(all_labels), device=all_labels.device), all_labels]


def image_masks(
    boxes: Tensor,
    labels: Tensor,
    detection_index: Tensor,
    logits: Tensor,
    roi_level: Tensor,
    image_size: tuple[int, int],
    original_size: tuple[int, int] | None,
    cfg: Config,
) -> Segmentation:
    """Chapter 7. One image's record: the sigmoid of its logits and, given ``original_size``
    (inference), the boxes and soft masks in the original image (``paste_into_original``)."""
    size = (int(image_size[0]), int(image_size[1]))
    probs = logits.sigmoid()
    boxes_orig = masks = None
    if original_size is not None:
        original_size = (int(original_size[0]), int(original_size[1]))
        boxes_orig, masks = paste_into_original(probs, boxes, size, original_size, cfg)
    return Segmentation(
        boxes=boxes,
        detection_index=detection_index,
        roi_level=roi_level,
        labels=labels,
        logits=logits,
        probs=probs,
        boxes_orig=boxes_orig,
        masks=masks,
        image_size=size,
        original_size=original_size if original_size is not None else size,
    )


def segment(
    mask_head: nn.Module,
    mask_predictor: nn.Module,
    maps: Mapping[str, Tensor],
    boxes: Sequence[Tensor],
    labels: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    cfg: Config,
    original_sizes: Sequence[tuple[int, int]] | None = None,
    detection_index: Sequence[Tensor] | None = None,
) -> list[Segmentation]:
    """Chapter 7. Masks of every detection of a batch; one record per image.

    ``boxes``/``labels``: per image, the detections' boxes (resized-image pixels) and classes
    (``Shortlist.boxes``/``labels``; in training the positive RoIs and their GT classes);
    ``detection_index``: their rows in the previous record (default ``0..D_i-1``).
    Steps as torchvision ``RoIHeads.forward`` (mask branch): 1. RoIAlign
    (``cfg.mask_roi_output_size``, ``cfg.mask_roi_sampling_ratio``) of all images' boxes
    together; 2. mask head and predictor; 3. ``class_channel``; 4. per image (``image_masks``)
    the sigmoid and, with ``original_sizes``, the paste into the original image
    (``GeneralizedRCNNTransform.postprocess``). Masks stay soft: callers apply
    ``cfg.mask_threshold`` (as torchvision; Detectron2 thresholds at 0.5).
    """
    pooled = roi_pool(maps, boxes, image_sizes, cfg.mask_roi_output_size, cfg.mask_roi_sampling_ratio, cfg)
    logits = class_channel(mask_predictor(mask_head(pooled.features)), labels)  # (D_all, M, M)
    counts = [len(b) for b in boxes]
    if detection_index is None:
        detection_index = [torch.arange(n, device=logits.device) for n in counts]
    originals = original_sizes if original_sizes is not None else [None] * len(boxes)
    per_image = zip(
        boxes, labels, detection_index, logits.split(counts), pooled.roi_level.split(counts), image_sizes, originals,
        strict=True,
    )  # fmt: skip
    return [image_masks(*parts, cfg) for parts in per_image]

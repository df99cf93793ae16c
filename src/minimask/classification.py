"""Chapter 5. What is in each proposal: a probability for every class, and a box per class.

The box head reads the 7x7 RoIAlign features of a proposal and answers two questions at
once: a softmax over K+1 classes (background at index 0) and, for each class, deltas that
move the proposal onto that class's object. torchvision ``TwoMLPHead``,
``FastRCNNPredictor`` (``models/detection/faster_rcnn.py``) and the first half of
``RoIHeads.postprocess_detections`` (``roi_heads.py``) are the oracle.

Shape shorthand: ``P`` proposals of one image, ``K + 1`` classes including background.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation

from minimask import boxes as box_ops
from minimask.config import Config
from minimask.pooling import Pooled, roi_pool


class BoxHead(nn.Module):
    """Chapter 5. Two fully connected layers on the flattened RoI features.

    ``Tensor[R, C, S, S] -> Tensor[R, box_head_dim]``. Parameter names ``fc6``/``fc7`` as
    torchvision ``TwoMLPHead`` (and Detectron2 ``FastRCNNConvFCHead`` with NUM_FC = 2).
    With ``convs`` (Detectron2's ``NUM_CONV`` / ``CONV_DIM``, e.g. the GN and SyncBN models of its
    zoo: four convs, one fc) a stack of 3x3 conv (+ ``norm``) + ReLU comes first (``convs.{i}``),
    and ``fcs = 1`` keeps only ``fc6``.
    """

    def __init__(
        self,
        in_features: int,
        dim: int,
        convs: tuple[int, ...] = (),
        in_channels: int = 0,
        norm: Callable[[int], nn.Module] | None = None,
        fcs: int = 2,
    ) -> None:
        super().__init__()
        if convs:
            blocks = []
            for width in convs:
                blocks.append(Conv2dNormActivation(in_channels, width, kernel_size=3, norm_layer=norm))
                in_features, in_channels = in_features // in_channels * width, width
            self.convs = nn.Sequential(*blocks)
            for layer in self.convs.modules():  # Detectron2's c2_msra_fill
                if isinstance(layer, nn.Conv2d):
                    nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                    if layer.bias is not None:
                        nn.init.zeros_(layer.bias)
        self.fc6 = nn.Linear(in_features, dim)
        if fcs == 2:
            self.fc7 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "convs"):
            x = self.convs(x)
        x = F.relu(self.fc6(x.flatten(start_dim=1)))
        return F.relu(self.fc7(x)) if hasattr(self, "fc7") else x


class BoxPredictor(nn.Module):
    """Chapter 5. Class logits (K+1) and class-specific box deltas ((K+1) * 4).

    Names ``cls_score``/``bbox_pred`` as torchvision ``FastRCNNPredictor``. The background
    row of ``bbox_pred`` exists (and is decoded) but is never used; Detectron2 has no such
    row (K * 4 outputs).
    """

    def __init__(self, dim: int, num_classes: int, agnostic: bool = False) -> None:
        super().__init__()
        self.cls_score = nn.Linear(dim, num_classes)
        self.bbox_pred = nn.Linear(dim, 4 if agnostic else num_classes * 4)  # agnostic: one box for all

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)


@dataclass(frozen=True)
class Classification:
    """Chapter 5. One image's proposals, each with its full class distribution and boxes.

    At inference every longlist proposal is classified (``proposal_index`` is 0..P-1); in
    training the rows are the sampled RoIs (``RoiTargets.sampled_index``), which may include
    ground-truth boxes appended to the proposals.
    """

    proposal_boxes: Tensor  # (P, 4) the boxes that were pooled, resized-image pixels
    proposal_index: Tensor  # (P,) int64 row in the Longlist; -1 for a ground-truth box (training)
    roi_level: Tensor  # (P,) int64 map each box was pooled from: 0 = P2 ... 3 = P5
    logits: Tensor  # (P, K+1) class logits, background first
    probs: Tensor  # (P, K+1) softmax of logits; every row sums to 1
    deltas: Tensor  # (P, K+1, 4) class-specific (dx, dy, dw, dh), weighted as trained
    boxes: Tensor  # (P, K+1, 4) refined box per class, clipped to the image
    image_size: tuple[int, int]  # resized (height, width) the boxes are clipped to

    @property
    def label(self) -> Tensor:
        """(P,) int64 the most probable class of each proposal (0 = background)."""
        return self.probs.argmax(dim=1)


def refine_boxes(deltas: Tensor, proposals: Tensor, image_size: tuple[int, int], cfg: Config) -> Tensor:
    """Chapter 5. Apply every class's deltas to its proposal and clip to the image.

    ``Tensor[P, K+1, 4], Tensor[P, 4] -> Tensor[P, K+1, 4]``: decode with
    ``cfg.bbox_reg_weights`` (10, 10, 5, 5) and the dw/dh clamp ``cfg.bbox_xform_clip``, then
    clip, as torchvision ``BoxCoder.decode`` + ``clip_boxes_to_image`` in
    ``postprocess_detections`` and Detectron2 ``FastRCNNOutputLayers.predict_boxes``.
    """
    decoded = box_ops.decode(deltas, proposals[:, None, :], cfg.bbox_reg_weights, clamp=cfg.bbox_xform_clip)
    return box_ops.clip(decoded, image_size)


def classify(
    box_head: nn.Module,
    box_predictor: nn.Module,
    maps: Mapping[str, Tensor],
    proposals: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    cfg: Config,
    proposal_index: Sequence[Tensor] | None = None,
) -> list[Classification]:
    """Chapter 5. Pool, classify and refine every proposal of a batch; one record per image.

    ``proposals``: one ``Tensor[P_i, 4]`` per image (``Longlist.boxes``), resized-image
    pixels; ``proposal_index``: their rows in the longlist (default ``0..P_i-1``). Steps as torchvision ``RoIHeads.forward`` (inference) up to the per-image loop of
    ``postprocess_detections``: all images' proposals are pooled and classified together
    (one batch through the head, as there), then softmax over K+1 classes and
    class-specific refinement per image. Nothing is thresholded here: each record keeps every
    proposal's full probability row and all K+1 refined boxes (torchvision keeps neither).
    """
    pooled = roi_pool(maps, proposals, image_sizes, cfg.box_roi_output_size, cfg.box_roi_sampling_ratio, cfg)
    logits, deltas = box_predictor(box_head(pooled.features))
    if proposal_index is None:
        proposal_index = [torch.arange(len(p), device=p.device) for p in proposals]
    return split_per_image(pooled, logits, deltas, proposals, proposal_index, image_sizes, cfg)


def class_probs(logits: Tensor, cfg: Config) -> Tensor:
    """Chapter 5. Softmax over the K+1 classes of each row: ``Tensor[P, K+1]``, background first.

    torchvision ``postprocess_detections``: ``F.softmax(class_logits, -1)``. Under Detectron2's
    rule (``cfg.background_class`` "last") the softmax runs over its own column order
    (fg..., bg), as ``FastRCNNOutputLayers.predict_probs``, and is rolled back: the same
    probabilities up to float rounding. ``cfg.class_score`` "sigmoid" (Detectron2
    ``USE_SIGMOID_CE``): a sigmoid per class, so a row does not sum to 1.
    """
    if cfg.class_score == "sigmoid":  # Detectron2 USE_SIGMOID_CE: each class on its own
        return logits.sigmoid()
    if cfg.background_class == "last":
        return F.softmax(logits.roll(-1, dims=-1), dim=-1).roll(1, dims=-1)
    return F.softmax(logits, dim=-1)


def split_per_image(
    pooled: Pooled,
    logits: Tensor,
    deltas: Tensor,
    proposals: Sequence[Tensor],
    proposal_index: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    cfg: Config,
) -> list[Classification]:
    """Chapter 5. Turn the batch's logits and deltas into one ``Classification`` per image."""
    num_classes = logits.shape[-1]
    counts = [len(p) for p in proposals]
    probs = class_probs(logits, cfg)
    deltas = deltas.reshape(len(deltas), deltas.shape[-1] // 4, 4)
    if deltas.shape[1] == 1:  # class-agnostic regression: every class gets the one box
        deltas = deltas.repeat(1, num_classes, 1)
    records = []
    for p_boxes, p_index, lg, pr, dl, lv, size in zip(
        proposals,
        proposal_index,
        logits.split(counts),
        probs.split(counts),
        deltas.split(counts),
        pooled.roi_level.split(counts),
        image_sizes,
        strict=True,
    ):
        size = (int(size[0]), int(size[1]))
        records.append(
            Classification(
                proposal_boxes=p_boxes,
                proposal_index=p_index,
                roi_level=lv,
                logits=lg,
                probs=pr,
                deltas=dl,
                boxes=refine_boxes(dl, p_boxes, size, cfg),
                image_size=size,
            )
        )
    return records


def class_table(c: Classification, proposal: int, top: int = 5) -> list[tuple[int, float]]:
    """Chapter 5. The ``top`` (class, probability) pairs of one proposal, most probable first."""
    if not 0 <= proposal < len(c.probs):
        raise IndexError(f"proposal {proposal} out of range (image has {len(c.probs)} proposals)")
    values, labels = c.probs[proposal].detach().topk(min(top, c.probs.shape[1]))
    return [(int(k), float(v)) for k, v in zip(labels, values, strict=True)]

"""Chapter 2. Features: a ResNet and a feature pyramid turn the batch into five maps.

The ResNet halves the resolution stage by stage (strides 4, 8, 16, 32) while it widens the
channels; the FPN (feature pyramid network) gives every stage the same number of channels
and mixes the coarse, semantic maps back into the fine ones, plus one extra, coarser level
("pool", stride 64) for the largest objects. Level names are torchvision's: "0", "1", "2",
"3", "pool" (Detectron2: p2..p6).

``build_backbone`` builds exactly the modules of torchvision ``resnet_fpn_backbone`` /
``_resnet_fpn_extractor`` (``models/detection/backbone_utils.py``) for "resnet50" and
"resnet18", so that state dicts line up with ``maskrcnn_resnet50_fpn``; "small" is our
narrow ResNet of torchvision ``BasicBlock``s, trainable from scratch on a CPU.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from minimask.config import Config
from minimask.transform import Batch

LAYERS = ("layer1", "layer2", "layer3", "layer4")
RETURN_LAYERS = {name: str(i) for i, name in enumerate(LAYERS)}  # layer1 -> "0", ..., layer4 -> "3"


@dataclass(frozen=True)
class Features:
    """Chapter 2. The feature pyramid of a batch: one map per level, finest first."""

    maps: dict[str, Tensor]  # level name ("0".."3", "pool") -> (N, C, H_l, W_l)
    strides: dict[str, tuple[int, int]]  # level name -> (padded H // H_l, padded W // W_l) in pixels
    padded_size: tuple[int, int]  # (Hp, Wp) of the batch the maps were computed from

    @property
    def names(self) -> list[str]:
        return list(self.maps)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """(H_l, W_l) of each level, in order."""
        return [(int(m.shape[-2]), int(m.shape[-1])) for m in self.maps.values()]


class SmallResNet(nn.Module):
    """Chapter 2. A narrow ResNet of torchvision ``BasicBlock``s for training from scratch.

    stem: two 3x3 stride-2 convs (each + BatchNorm + ReLU), total stride 4 and no max-pool
    (torchvision's ResNet uses one 7x7 stride-2 conv and a stride-2 max-pool); then
    layer1..layer4, ONE BasicBlock each, strides 1, 2, 2, 2 -> feature strides 4, 8, 16, 32.
    The children are named so that torchvision ``IntermediateLayerGetter`` can return
    layer1..layer4.
    """

    def __init__(
        self, stem: tuple[int, ...], widths: tuple[int, int, int, int], norm_layer: Callable[[int], nn.Module]
    ) -> None:
        super().__init__()
        if not 1 <= len(stem) <= 2:
            raise ValueError(f"Config.backbone_stem = {stem!r}: the small backbone has 1 or 2 stem widths")
        s0, s1 = stem[0], stem[-1]
        self.stem = nn.Sequential(
            nn.Conv2d(3, s0, kernel_size=3, stride=2, padding=1, bias=False),
            norm_layer(s0),
            nn.ReLU(inplace=True),
            nn.Conv2d(s0, s1, kernel_size=3, stride=2, padding=1, bias=False),
            norm_layer(s1),
            nn.ReLU(inplace=True),
        )
        in_channels = s1
        for name, width, stride in zip(LAYERS, widths, (1, 2, 2, 2), strict=True):
            downsample = None
            if stride != 1 or in_channels != width:  # the shortcut must match the block's output
                downsample = nn.Sequential(
                    nn.Conv2d(in_channels, width, kernel_size=1, stride=stride, bias=False), norm_layer(width)
                )
            block = BasicBlock(in_channels, width, stride=stride, downsample=downsample, norm_layer=norm_layer)
            self.add_module(name, nn.Sequential(block))
            in_channels = width
        # torchvision ResNet's initialisation (models/resnet.py ResNet.__init__)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for name in LAYERS:
            x = getattr(self, name)(x)
        return x


class FusedFrozenBatchNorm2d(FrozenBatchNorm2d):
    """Chapter 11. torchvision's ``FrozenBatchNorm2d`` (same buffers) computed as Detectron2's.

    Detectron2 ``layers/batch_norm.py`` ``FrozenBatchNorm2d.forward`` calls ``F.batch_norm``
    (one fused kernel) when no gradient is needed, and x * scale + bias otherwise; torchvision
    always computes x * scale + bias. The two round differently (features differ by ~1e-7);
    ``cfg.frozen_bn_arithmetic`` "batch_norm" picks Detectron2's.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad:
            return super().forward(x)
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )


def norm_layer(cfg: Config) -> Callable[[int], nn.Module]:
    """Chapter 2. The backbone's normalisation: trainable BatchNorm or FrozenBatchNorm2d(eps).

    torchvision uses BatchNorm2d when built with no weights at all and FrozenBatchNorm2d
    otherwise; the COCO_V1 Mask R-CNN weights need eps = 0.0 (``overwrite_eps``).
    """
    if cfg.backbone_norm == "frozen":
        frozen = FusedFrozenBatchNorm2d if cfg.frozen_bn_arithmetic == "batch_norm" else FrozenBatchNorm2d
        return functools.partial(frozen, eps=cfg.frozen_bn_eps)
    if cfg.backbone_norm == "group":
        return group_norm
    return nn.BatchNorm2d


def group_norm(channels: int) -> nn.GroupNorm:
    """Chapter 11. GroupNorm with 32 groups, as Detectron2 ``get_norm("GN", channels)`` (``layers/batch_norm.py``)."""
    return nn.GroupNorm(32, channels)


def conv_norm_layer(cfg: Config) -> Callable[[int], nn.Module]:
    """Chapter 2. The norm of the FPN and conv heads where they have one (``cfg.conv_norm``)."""
    return group_norm if cfg.conv_norm == "group" else nn.BatchNorm2d


DEPTHS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3), "resnet152": (3, 8, 36, 3)}


def bottleneck_resnet(cfg: Config, norm: Callable[[int], nn.Module]) -> ResNet:
    """Chapter 11. A Bottleneck ResNet of any depth, width and grouping, with torchvision's module names.

    torchvision ``ResNet(Bottleneck, layers, groups, width_per_group)`` (``models/resnet.py``),
    then, if ``cfg.backbone_stem`` / ``backbone_widths`` differ from (64,) / (256, ..., 2048),
    the stem and stages rebuilt at those widths, as Detectron2's ``MODEL.RESNETS.STEM_OUT_CHANNELS``,
    ``RES2_OUT_CHANNELS``, ``NUM_GROUPS`` and ``WIDTH_PER_GROUP`` do (``backbone/resnet.py``
    ``build_resnet_backbone``: the 3x3 conv of stage i has groups * width_per_group * 2**i channels).
    """
    layers = DEPTHS[cfg.backbone]
    groups, per_group = cfg.resnet_groups, cfg.resnet_width_per_group
    stem, widths = cfg.backbone_stem[-1], cfg.backbone_widths
    if len(cfg.backbone_stem) != 1:
        raise ValueError(f"Config.backbone_stem = {cfg.backbone_stem!r}: a Bottleneck ResNet has one stem conv")
    if (stem, widths) == (64, (256, 512, 1024, 2048)):
        return ResNet(Bottleneck, list(layers), groups=groups, width_per_group=per_group, norm_layer=norm)
    body = ResNet(Bottleneck, [1, 1, 1, 1])  # a skeleton: every part below is replaced
    body.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
    body.bn1 = norm(stem)
    in_channels = stem
    for i, (name, blocks, width) in enumerate(zip(LAYERS, layers, widths, strict=True)):
        planes = width // Bottleneck.expansion
        inner = groups * per_group * 2**i  # the 3x3 conv's channels
        base_width = 64 * inner / (planes * groups)
        if width % Bottleneck.expansion or int(planes * (base_width / 64.0)) * groups != inner:
            raise ValueError(f"Config.backbone_widths = {widths!r}: stage {i + 1} cannot hold {inner} inner channels")
        stride = 1 if i == 0 else 2
        downsample = nn.Sequential(nn.Conv2d(in_channels, width, 1, stride=stride, bias=False), norm(width))
        stage = [Bottleneck(in_channels, planes, stride, downsample, groups, base_width, norm_layer=norm)]
        stage += [
            Bottleneck(width, planes, groups=groups, base_width=base_width, norm_layer=norm) for _ in range(1, blocks)
        ]
        setattr(body, name, nn.Sequential(*stage))
        in_channels = width
    for m in body.modules():  # torchvision ResNet's initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    body.fc = nn.Linear(in_channels, 1000)
    return body


def freeze_layers(body: nn.Module, trainable_layers: int, stem: tuple[str, ...]) -> None:
    """Chapter 2. Stop gradients in all but the last ``trainable_layers`` stages.

    Stages from the top: layer4, layer3, layer2, layer1, then the stem (``stem`` names its
    modules' prefixes; the first counts as a stage, the rest train only at 5). As torchvision
    ``_resnet_fpn_extractor``: 3 trains layer2-4, 5 trains everything.
    """
    trainable = ["layer4", "layer3", "layer2", "layer1", stem[0]][:trainable_layers]
    if trainable_layers == 5:
        trainable += stem[1:]  # torchvision adds bn1 only when everything trains
    for name, parameter in body.named_parameters():
        if not any(name.startswith(prefix) for prefix in trainable):
            parameter.requires_grad_(False)


def stride_in_1x1(body: nn.Module) -> None:
    """Chapter 11. Move each stage's stride from the 3x3 conv to the first 1x1 conv.

    Detectron2 ``BottleneckBlock`` with ``MODEL.RESNETS.STRIDE_IN_1X1 = True`` (the MSRA
    ResNets of its model zoo) strides in ``conv1``; torchvision's ``Bottleneck`` ("ResNet
    v1.5") in ``conv2``. Same parameters, different features; ``cfg.resnet_stride_in_1x1``.
    """
    for name in LAYERS[1:]:
        block = getattr(body, name)[0]
        if not hasattr(block, "conv3"):
            raise ValueError("Config.resnet_stride_in_1x1 needs a Bottleneck ResNet (resnet50)")
        block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)


def build_backbone(cfg: Config) -> BackboneWithFPN:
    """Chapter 2. The ResNet + FPN of ``cfg.backbone``; forward returns the five FPN maps.

    "resnet50"/"resnet101"/"resnet152"/"resnet18": torchvision's ResNet (``bottleneck_resnet``
    for the Bottleneck ones, at ``cfg``'s widths and grouping) with
    ``trainable_backbone_layers`` as in ``_resnet_fpn_extractor`` (``backbone_utils.py``),
    the same module tree as ``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)``.
    "small": ``SmallResNet``. Both wrapped in torchvision ``BackboneWithFPN`` with a
    ``LastLevelMaxPool`` ("pool" level); ``out_channels = cfg.fpn_out_channels``; BatchNorm
    in the FPN convs if ``cfg.fpn_norm`` (torchvision v2 does). Returns an ``nn.Module``
    whose forward maps ``Tensor[N, 3, Hp, Wp]`` to an OrderedDict "0".."3", "pool" of
    ``Tensor[N, C, Hp / stride, Wp / stride]``.
    """
    norm = norm_layer(cfg)
    if cfg.backbone in DEPTHS or cfg.backbone == "resnet18":
        if cfg.backbone in DEPTHS:
            body = bottleneck_resnet(cfg, norm)
        else:
            body = torchvision.models.resnet18(weights=None, norm_layer=norm)
        if cfg.resnet_stride_in_1x1:
            stride_in_1x1(body)
        freeze_layers(body, cfg.trainable_backbone_layers, ("conv1", "bn1"))
        in_channels = [getattr(body, name)[-1].conv2.out_channels for name in LAYERS]
        if cfg.backbone in DEPTHS:  # a Bottleneck's output is its conv3's
            in_channels = [getattr(body, name)[-1].conv3.out_channels for name in LAYERS]
    elif cfg.backbone == "small":
        body = SmallResNet(cfg.backbone_stem, cfg.backbone_widths, norm)
        freeze_layers(body, cfg.trainable_backbone_layers, ("stem",))
        in_channels = list(cfg.backbone_widths)
    else:  # Config validates the name; kept for a clear message if that ever changes
        raise ValueError(f"Config.backbone = {cfg.backbone!r} is not supported")
    return BackboneWithFPN(
        body,
        return_layers=dict(RETURN_LAYERS),
        in_channels_list=in_channels,
        out_channels=cfg.fpn_out_channels,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=conv_norm_layer(cfg) if cfg.fpn_norm else None,
    )


def extract_features(backbone: nn.Module, batch: Batch) -> Features:
    """Chapter 2. Run the backbone on a batch; record each level's map and stride.

    stride = padded size // map size per axis, the rule torchvision's ``AnchorGenerator``
    uses; it is 4, 8, 16, 32, 64 for sizes that are multiples of 32 and 64, but e.g. a
    padded height of 800 gives a 13-row "pool" map and a stride of 61 (torchvision ``AnchorGenerator.forward``).
    """
    maps = OrderedDict(backbone(batch.tensors))
    hp, wp = batch.padded_size
    strides = {name: (hp // int(m.shape[-2]), wp // int(m.shape[-1])) for name, m in maps.items()}
    return Features(maps=dict(maps), strides=strides, padded_size=(hp, wp))


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (for the chapter's table)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

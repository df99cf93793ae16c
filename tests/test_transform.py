"""minimask.transform against torchvision's GeneralizedRCNNTransform and resize_boxes (the oracles),
and the input checks (our own: torchvision has almost none)."""

from __future__ import annotations

import pytest
import torch
from helpers_rpn import tv_transform
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection.transform import resize_boxes as tv_resize_boxes

from minimask import transform as T
from minimask.config import Config

R50 = Config().replace(min_size=320, max_size=512)  # torchvision's architecture, smaller images
SHAPES = Config.shapes()
SIZES = [(200, 300), (330, 300), (77, 333), (512, 100), (20, 30)]  # landscape, portrait, extreme, tiny


def _images(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=g) for h, w in sizes]


@pytest.mark.parametrize("cfg", [R50, SHAPES], ids=["r50", "shapes"])
def test_batch_equals_generalized_rcnn_transform(cfg):
    """Oracle: torchvision GeneralizedRCNNTransform (eval): same padded tensor and image sizes."""
    images = _images(SIZES)
    expected, _ = tv_transform(cfg)(images)
    batch = T.preprocess(images, cfg)
    assert torch.equal(batch.tensors, expected.tensors)
    assert batch.image_sizes == [tuple(s) for s in expected.image_sizes]
    assert batch.original_sizes == SIZES
    assert batch.padded_size == tuple(expected.tensors.shape[-2:])
    for size, scale, resized in zip(SIZES, batch.scale_factors, batch.image_sizes, strict=True):
        assert T.resized_size(size, cfg) == (resized, scale)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 260), w=st.integers(1, 260), min_size=st.integers(8, 200), extra=st.integers(0, 150))
def test_resize_rule_equals_torchvision_for_any_size(h, w, min_size, extra):
    """Oracle: torchvision GeneralizedRCNNTransform; any image size and min/max sizes (floor, pad to 32).
    Where a side would round down to 0, torchvision crashes inside interpolate; we name the image."""
    cfg = SHAPES.replace(min_size=min_size, max_size=min_size + extra)
    image = _images([(h, w)], seed=h * 1000 + w)
    if 0 in T.resized_size((h, w), cfg)[0]:  # so elongated that a side would vanish
        with pytest.raises(RuntimeError):
            tv_transform(cfg)(image)
        with pytest.raises(ValueError, match=r"images\[0\].*aspect ratio"):
            T.preprocess(image, cfg)
        return
    expected, _ = tv_transform(cfg)(image)
    batch = T.preprocess(image, cfg)
    assert batch.image_sizes == [tuple(expected.image_sizes[0])]
    assert torch.equal(batch.tensors, expected.tensors)


def test_uint8_image_gives_the_float_answer():
    """Oracle: the same image as float / 255 through torchvision's transform (which refuses uint8)."""
    g = torch.Generator().manual_seed(3)
    as_bytes = torch.randint(0, 256, (3, 50, 70), generator=g, dtype=torch.uint8)
    expected, _ = tv_transform(SHAPES)([as_bytes.float() / 255])
    assert torch.equal(T.preprocess([as_bytes], SHAPES).tensors, expected.tensors)
    assert torch.equal(T.preprocess([as_bytes], SHAPES).tensors, T.preprocess([as_bytes.float() / 255], SHAPES).tensors)


@settings(max_examples=40, deadline=None)
@given(
    src=st.tuples(st.integers(1, 900), st.integers(1, 900)),
    dst=st.tuples(st.integers(1, 900), st.integers(1, 900)),
    seed=st.integers(0, 1000),
)
def test_resize_boxes_equals_torchvision(src, dst, seed):
    """Oracle: torchvision transform.resize_boxes (float32 ratios per axis); and the round trip."""
    g = torch.Generator().manual_seed(seed)
    b = torch.rand(7, 4, generator=g) * torch.tensor([src[1], src[0], src[1], src[0]])
    assert torch.equal(T.resize_boxes(b, src, dst), tv_resize_boxes(b, src, dst))
    torch.testing.assert_close(T.resize_boxes(T.resize_boxes(b, src, dst), dst, src), b, rtol=1e-5, atol=1e-3)


def test_resize_target_equals_torchvision_target_resize():
    """Oracle: GeneralizedRCNNTransform with targets: boxes scaled, masks nearest -> uint8."""
    cfg = SHAPES
    images = _images([(90, 130), (61, 47)], seed=5)
    g = torch.Generator().manual_seed(6)
    targets = []
    for im in images:
        h, w = im.shape[-2:]
        masks = torch.rand(3, h, w, generator=g) > 0.6
        boxes = torch.tensor([[1.0, 2.0, w - 3.0, h - 1.0], [0.0, 0.0, w / 2, h / 3], [5.5, 4.25, 9.0, 30.0]])
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 2, 3]), "masks": masks.to(torch.uint8)})
    tv = tv_transform(cfg)
    _, expected = tv(images, [dict(t) for t in targets])
    batch = T.preprocess(images, cfg)
    for t, e, src, dst in zip(targets, expected, batch.original_sizes, batch.image_sizes, strict=True):
        ours = T.resize_target(t, src, dst)
        assert torch.equal(ours["boxes"], e["boxes"])
        assert ours["masks"].dtype == torch.uint8 and torch.equal(ours["masks"], e["masks"])
        assert torch.equal(ours["labels"], t["labels"])
        assert t["masks"].shape[-2:] == src  # the input is not modified
    empty = {"boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 10, 12, dtype=torch.uint8)}
    out = T.resize_target(empty, (10, 12), (20, 24))
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 20, 24)


def test_empty_list_gives_an_empty_batch():
    """Oracle: none needed (torchvision raises IndexError here): zero images, no error."""
    batch = T.preprocess([], SHAPES)
    assert len(batch) == 0 and batch.tensors.shape[0] == 0 and batch.image_sizes == []
    assert T.check_images([]) == []


def test_tiny_image_is_padded_to_one_coarsest_cell():
    """Oracle: torchvision GeneralizedRCNNTransform; a 20x30 image kept at its size pads to 32x32."""
    cfg = SHAPES.replace(min_size=20, max_size=30)
    image = _images([(20, 30)])
    expected, _ = tv_transform(cfg)(image)
    batch = T.preprocess(image, cfg)
    assert batch.image_sizes == [(20, 30)] and batch.padded_size == (32, 32)
    assert torch.equal(batch.tensors, expected.tensors)


GOOD = torch.rand(3, 8, 9)


@pytest.mark.parametrize(
    "images, error, words",
    [
        (torch.rand(3, 8, 9), TypeError, ["list", "bare Tensor"]),
        (torch.rand(2, 3, 8, 9), TypeError, ["list", "bare Tensor"]),
        ("image.png", TypeError, ["list", "str"]),
        ([GOOD, torch.rand(8, 9, 3)], ValueError, ["images[1]", "permute"]),
        ([torch.rand(8, 9)], ValueError, ["images[0]", "3 dimensions"]),
        ([GOOD, GOOD, torch.rand(4, 8, 9)], ValueError, ["images[2]", "alpha"]),
        ([torch.rand(1, 8, 9)], ValueError, ["images[0]", "grey"]),
        ([torch.rand(3, 0, 9)], ValueError, ["images[0]", "empty"]),
        ([GOOD, torch.full((3, 4, 4), float("nan"))], ValueError, ["images[1]", "NaN"]),
        ([torch.tensor([[[0.0, float("inf")]]]).expand(3, 1, 2)], ValueError, ["images[0]", "inf"]),
        ([GOOD * 255], ValueError, ["images[0]", "0-255", "divide by 255"]),
        ([GOOD - 0.8], ValueError, ["images[0]", "normalised"]),
        ([torch.randint(0, 255, (3, 4, 4), dtype=torch.int32)], TypeError, ["images[0]", "int32"]),
        ([GOOD, [[0.5]]], TypeError, ["images[1]", "list"]),
    ],
    ids=[
        "bare-tensor",
        "4d-tensor",
        "string",
        "hwc",
        "2d",
        "4-channels",
        "1-channel",
        "zero-size",
        "nan",
        "inf",
        "0-255-floats",
        "normalised",
        "int32",
        "nested-list",
    ],
)
def test_bad_input_is_refused_by_name(images, error, words):
    """Oracle: our own check (torchvision crashes deep inside or answers silently): a named error."""
    with pytest.raises(error) as info:
        T.check_images(images)
    for word in words:
        assert word in str(info.value)
    with pytest.raises(error):
        T.preprocess(images, SHAPES)


def test_values_at_the_edge_of_the_tolerated_range_pass():
    """Oracle: torchvision's transform on the same values (resampling over/undershoot is tolerated)."""
    image = torch.rand(3, 10, 10) * 1.9 - 0.45  # [-0.45, 1.45]
    expected, _ = tv_transform(SHAPES)([image])
    assert torch.equal(T.preprocess([image], SHAPES).tensors, expected.tensors)

"""minimask.boxes against torchvision's box ops and detection BoxCoder (the oracles)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_iou, clip_boxes_to_image, remove_small_boxes

from minimask import boxes as B

SETTINGS = settings(max_examples=150, deadline=None)
coord = st.floats(min_value=-500.0, max_value=1500.0, allow_nan=False, width=32)
side = st.floats(min_value=0.0, max_value=800.0, allow_nan=False, width=32)


@st.composite
def box_sets(draw, min_n=0, max_n=12, min_side=0.0):
    """Boxes with any corner, including zero width/height and boxes far outside an image."""
    n = draw(st.integers(min_n, max_n))
    rows = []
    for _ in range(n):
        x, y = draw(coord), draw(coord)
        w = draw(st.one_of(st.just(0.0), side)) if min_side == 0 else draw(st.floats(min_side, 800.0, width=32))
        h = draw(st.one_of(st.just(0.0), side)) if min_side == 0 else draw(st.floats(min_side, 800.0, width=32))
        rows.append([x, y, x + w, y + h])
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


@st.composite
def box_pairs(draw, max_side_ratio: float = 50.0):
    """(anchors, targets) with positive sides whose side ratios stay under decode's clamp."""
    n = draw(st.integers(1, 10))
    anchors, targets = [], []
    for _ in range(n):
        ax, ay = draw(coord), draw(coord)
        aw, ah = draw(st.floats(1.0, 500.0)), draw(st.floats(1.0, 500.0))
        rw = draw(st.floats(1 / max_side_ratio, max_side_ratio))
        rh = draw(st.floats(1 / max_side_ratio, max_side_ratio))
        dx, dy = draw(st.floats(-3.0, 3.0)), draw(st.floats(-3.0, 3.0))
        tw, th = aw * rw, ah * rh
        tx, ty = ax + dx * aw, ay + dy * ah
        anchors.append([ax, ay, ax + aw, ay + ah])
        targets.append([tx, ty, tx + tw, ty + th])
    return torch.tensor(anchors, dtype=torch.float64), torch.tensor(targets, dtype=torch.float64)


# --- IoU ---------------------------------------------------------------------------------------
@SETTINGS
@given(a=box_sets(), b=box_sets())
def test_iou_equals_torchvision_box_iou(a, b):
    """Oracle: torchvision.ops.box_iou, including zero-size boxes (NaN for 0/0, as torchvision)."""
    torch.testing.assert_close(B.iou(a, b), box_iou(a, b), equal_nan=True, rtol=1e-6, atol=1e-6)


@SETTINGS
@given(a=box_sets(min_n=1, min_side=0.5), b=box_sets(min_n=1, min_side=0.5))
def test_iou_properties(a, b):
    """Symmetric, within [0, 1], and exactly 1 for a box with itself."""
    m = B.iou(a, b)
    torch.testing.assert_close(m, B.iou(b, a).T)
    assert ((m >= 0) & (m <= 1 + 1e-6)).all()
    torch.testing.assert_close(torch.diagonal(B.iou(a, a)), torch.ones(len(a)), rtol=0, atol=1e-6)


def test_iou_known_values_and_empty():
    """Hand-checkable cases: half overlap -> 1/3, disjoint -> 0, touching edges -> 0; empty sets."""
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [10.0, 0.0, 20.0, 10.0]])
    torch.testing.assert_close(B.iou(a, b), torch.tensor([[1 / 3, 0.0, 0.0]]))
    assert B.iou(torch.zeros(0, 4), b).shape == (0, 3)
    assert B.iou(a, torch.zeros(0, 4)).shape == (1, 0)


# --- encode / decode ---------------------------------------------------------------------------
WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 0.5, 7.0)]


@pytest.mark.parametrize("weights", WEIGHTS)
@SETTINGS
@given(pairs=box_pairs())
def test_encode_equals_boxcoder(weights, pairs):
    """Oracle: torchvision detection BoxCoder.encode_single with the same weights."""
    anchors, targets = pairs
    coder = BoxCoder(weights)
    torch.testing.assert_close(B.encode(targets, anchors, weights), coder.encode_single(targets, anchors))


deltas_strategy = st.lists(
    st.tuples(*[st.floats(-20.0, 20.0, width=32)] * 4), min_size=1, max_size=10
)  # far past the clamp: exp(20) would be a 5e8x box without it


@pytest.mark.parametrize("weights", WEIGHTS)
@SETTINGS
@given(anchors=box_sets(min_n=1, max_n=10, min_side=0.0), data=st.data())
def test_decode_equals_boxcoder_with_huge_deltas(weights, anchors, data):
    """Oracle: BoxCoder.decode_single, bit for bit, incl. zero-size anchors and huge deltas."""
    deltas = torch.tensor(
        data.draw(
            st.lists(st.tuples(*[st.floats(-20.0, 20.0, width=32)] * 4), min_size=len(anchors), max_size=len(anchors))
        )
    )
    coder = BoxCoder(weights)
    ours = B.decode(deltas, anchors, weights)
    torch.testing.assert_close(ours, coder.decode_single(deltas, anchors), rtol=0, atol=0, equal_nan=True)
    assert torch.isfinite(ours).all(), "the log(1000/16) clamp keeps every box finite"


def test_decode_class_specific_broadcast_equals_boxcoder():
    """Oracle: BoxCoder.decode_single on [P, K*4] codes == our decode on [P, K, 4] with [P, 1, 4]."""
    g = torch.Generator().manual_seed(0)
    proposals = torch.rand(7, 2, generator=g) * 100
    proposals = torch.cat([proposals, proposals + 1 + torch.rand(7, 2, generator=g) * 50], dim=1)
    codes = torch.randn(7, 5 * 4, generator=g) * 3
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    expected = coder.decode_single(codes, proposals).reshape(7, 5, 4)
    ours = B.decode(codes.reshape(7, 5, 4), proposals[:, None, :], (10.0, 10.0, 5.0, 5.0))
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)


def test_decode_clamp_value_and_effect():
    """The clamp is log(1000/16): a dw of 100 gives exactly 62.5 times the anchor width."""
    assert B.DEFAULT_SCALE_CLAMP == math.log(1000.0 / 16)
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    box = B.decode(torch.tensor([[0.0, 0.0, 100.0, -10.0]]), anchor)
    torch.testing.assert_close(box[0, 2] - box[0, 0], torch.tensor(1000.0))  # capped at 1000 px
    # no lower clamp: the height shrinks to 16 * exp(-10)
    torch.testing.assert_close(box[0, 3] - box[0, 1], torch.tensor(16 * math.exp(-10)), rtol=1e-3, atol=0)


@settings(max_examples=200, deadline=None)
@given(pairs=box_pairs(max_side_ratio=50.0))
def test_decode_undoes_encode(pairs):
    """Property: decode(encode(target, anchor), anchor) == target (ratios stay under the clamp)."""
    anchors, targets = pairs
    for w in WEIGHTS:
        back = B.decode(B.encode(targets, anchors, w), anchors, w)
        torch.testing.assert_close(back, targets, rtol=1e-9, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(pairs=box_pairs(max_side_ratio=20.0))
def test_encode_undoes_decode(pairs):
    """Property: encode(decode(d, anchor), anchor) == d for deltas under the clamp."""
    anchors, targets = pairs
    deltas = B.encode(targets, anchors)
    torch.testing.assert_close(B.encode(B.decode(deltas, anchors), anchors), deltas, rtol=1e-6, atol=1e-6)


# --- clip and remove_small -------------------------------------------------------------------
@SETTINGS
@given(b=box_sets(), h=st.integers(1, 1200), w=st.integers(1, 1200))
def test_clip_equals_torchvision(b, h, w):
    """Oracle: torchvision.ops.clip_boxes_to_image; plus idempotence and staying inside."""
    ours = B.clip(b, (h, w))
    torch.testing.assert_close(ours, clip_boxes_to_image(b, (h, w)), rtol=0, atol=0)
    torch.testing.assert_close(B.clip(ours, (h, w)), ours, rtol=0, atol=0)
    assert (ours[:, 0::2] >= 0).all() and (ours[:, 0::2] <= w).all()
    assert (ours[:, 1::2] >= 0).all() and (ours[:, 1::2] <= h).all()


@SETTINGS
@given(b=box_sets(), min_size=st.floats(0.0, 50.0))
def test_remove_small_equals_torchvision(b, min_size):
    """Oracle: torchvision.ops.remove_small_boxes (same indices, same order)."""
    assert torch.equal(B.remove_small(b, min_size), remove_small_boxes(b, min_size))


def test_remove_small_boundary_and_inverted():
    """A side exactly at min_size is kept (>=); zero-width, inverted and NaN boxes are removed."""
    b = torch.tensor(
        [[0, 0, 1e-3, 5], [0, 0, 5e-4, 5], [0, 0, 5, 0], [5, 5, 4, 9], [0, 0, float("nan"), 2], [0, 0, 2, 2]]
    )
    assert B.remove_small(b, 1e-3).tolist() == [0, 5]
    assert B.remove_small(b, 1e-3).tolist() == remove_small_boxes(b, 1e-3).tolist()

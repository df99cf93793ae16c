"""The training loop's pieces that need no model: schedule, batch stream, flip augmentation."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from minimask.train import TrainSettings, batch_indices, hflip, learning_rate


def test_learning_rate_warmup_then_cosine():
    """Warm-up rises linearly from lr/1000 to lr; the cosine then falls to 0 at the last iteration."""
    s = TrainSettings(iterations=1000, warmup=100, lr=1e-3)
    assert learning_rate(0, s) == pytest.approx(1e-6)
    assert learning_rate(50, s) == pytest.approx(1e-3 * (0.001 + 0.999 * 0.5))
    assert learning_rate(100, s) == pytest.approx(1e-3)
    assert learning_rate(550, s) == pytest.approx(0.5e-3)
    assert learning_rate(1000, s) == pytest.approx(0.0, abs=1e-12)
    lrs = [learning_rate(i, s) for i in range(100, 1000)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False)), "monotone after warm-up"
    assert math.isclose(max(lrs), 1e-3)


def test_batch_stream_is_a_sequence_of_permutations_and_splits_across_processes():
    """Every epoch visits each image once; two processes together see exactly what one would."""
    s = TrainSettings(batch_size=4, seed=3)
    n = 10
    one = [i for it in range(5) for i in batch_indices(it, s, n)]  # 20 positions = 2 epochs
    assert sorted(one[:10]) == list(range(10)) and sorted(one[10:]) == list(range(10))
    assert one[:10] != one[10:], "each epoch has its own order"
    # world size 2: iteration it of rank r takes positions (2 it + r) * bs ...
    two = [i for it in range(5) for r in range(2) for i in batch_indices(it, s, n, rank=r, world=2)]
    ten_its = [i for it in range(10) for i in batch_indices(it, s, n)]
    assert two == ten_its
    assert batch_indices(7, s, n) == batch_indices(7, s, n), "recomputable: exact resume"
    assert batch_indices(0, s, n) != batch_indices(0, TrainSettings(batch_size=4, seed=4), n)


def test_hflip_equals_torchvision_v2():
    """Oracle: torchvision.transforms.v2.functional.horizontal_flip on image, boxes and masks."""
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 20, 33, generator=g)
    masks = (torch.rand(2, 20, 33, generator=g) > 0.5).to(torch.uint8)
    boxes = torch.tensor([[1.0, 2.0, 10.0, 12.0], [0.0, 0.0, 33.0, 20.0]])
    target = {"boxes": boxes, "masks": masks, "labels": torch.tensor([1, 2])}
    img2, t2 = hflip(image, target)
    tv_boxes = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(20, 33))
    torch.testing.assert_close(img2, TF.horizontal_flip(image), rtol=0, atol=0)
    torch.testing.assert_close(t2["boxes"], TF.horizontal_flip(tv_boxes).as_subclass(torch.Tensor), rtol=0, atol=0)
    assert torch.equal(t2["masks"], TF.horizontal_flip(tv_tensors.Mask(masks)).as_subclass(torch.Tensor))
    assert torch.equal(target["boxes"], boxes), "the input target is not modified"
    assert torch.equal(t2["labels"], target["labels"])


@pytest.mark.parametrize("bad", [{"iterations": 0}, {"batch_size": 0}, {"lr": 0.0}, {"hflip": 1.5}])
def test_settings_refuse_bad_values(bad):
    with pytest.raises(ValueError):
        TrainSettings(**bad)

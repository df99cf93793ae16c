"""The record contract on whole forwards: every filtering stage's fates partition its input, every
NMS-dropped row names a suppressor torchvision's own ``nms`` agrees with, and the links lead from
each final detection back to its anchor through boxes equal to the stage records.

Models: the shipped shapes model on featured validation images, and seeded (random) torchvision
R50-FPN weights (no download) at 320 px, with ``box_score_thresh`` 0.05 and 0.0.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from helpers_records import check_partition, check_suppressors

from minimask import boxes as B
from minimask import compat, load_pretrained
from minimask.data import featured, noise_images


@pytest.fixture(scope="module")
def shapes_run():
    model = load_pretrained("shapes")
    images = [featured(i)[0] for i in range(3)]
    return model.run(images)


@pytest.fixture(scope="module")
def r50_model():
    torch.manual_seed(0)
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=320, max_size=480
    ).eval()
    return compat.from_torchvision(tv)


def smooth_image(seed: int, h: int, w: int) -> torch.Tensor:
    return noise_images(seed, [(h, w)])[0]


def check_run(run) -> None:
    """Partition, suppressors and lineage of every image of an inference run."""
    for obj, ll, cls, sl, seg, sc in zip(
        run.objectness, run.longlist, run.classification, run.shortlist, run.segmentation, run.scores, strict=True
    ):
        # longlist: every anchor has a fate; kept ones are the proposals
        assert len(ll.fate) == len(obj.anchors)
        check_partition(ll, ll.anchor_index)
        check_suppressors(ll)
        # classification: one row per proposal, linked to it
        assert torch.equal(cls.proposal_index, torch.arange(len(ll)))
        assert torch.equal(cls.proposal_boxes, ll.boxes)
        # shortlist: every candidate has a fate
        assert len(sl.fate) == len(ll) * sl.num_foreground
        check_partition(sl, sl.candidate_index)
        check_suppressors(sl)
        # follow each detection back: detection -> candidate -> proposal -> anchor
        for d in range(len(sl)):
            proposal, label = sl.candidate(int(sl.candidate_index[d]))
            assert proposal == int(sl.proposal_index[d]) and label == int(sl.labels[d])
            assert torch.equal(sl.boxes[d], cls.boxes[proposal, label])
            assert float(sl.scores[d]) == float(cls.probs[proposal, label])
            anchor = int(ll.anchor_index[cls.proposal_index[proposal]])
            assert torch.equal(cls.proposal_boxes[proposal], B.clip(obj.proposals[anchor], ll.image_size))
            assert int(ll.anchor_level[proposal]) == int(obj.anchor_level[anchor])
            assert ll.fate_of(anchor) == "kept" and sl.fate_of(int(sl.candidate_index[d])) == "kept"
        # segmentation and scores: one row per detection, linked to it
        assert torch.equal(seg.detection_index, torch.arange(len(sl)))
        assert torch.equal(seg.boxes, sl.boxes) and torch.equal(seg.labels, sl.labels)
        assert torch.equal(sc.detection_index, torch.arange(len(sl)))
        assert torch.equal(sc.proposal_index, sl.proposal_index)


def test_shapes_model_records(shapes_run):
    check_run(shapes_run)
    assert sum(len(ll.dropped["nms"]) for ll in shapes_run.longlist) > 0
    assert sum(len(sl.dropped["nms"]) for sl in shapes_run.shortlist) > 0


@pytest.mark.parametrize("score_thresh", [0.05, 0.0])
def test_r50_seeded_records(r50_model, score_thresh):
    r50_model.config = r50_model.config.replace(box_score_thresh=score_thresh)
    run = r50_model.run([smooth_image(1, 300, 400)])
    check_run(run)
    assert len(run.shortlist[0]) > 0 and len(run.longlist[0].dropped["nms"]) > 0


def test_levels_say_which_pyramid_level(shapes_run):
    """anchor_level counts P2..P6 (0..4), roi_level P2..P5 (0..3); the same proposal may differ."""
    ll, cls = shapes_run.longlist[0], shapes_run.classification[0]
    assert int(ll.anchor_level.max()) <= 4 and int(cls.roi_level.max()) <= 3
    assert bool((ll.anchor_level != cls.roi_level).any())

"""Training losses (minimask.losses) against torchvision's loss functions on the same tensors.

Oracles: ``RegionProposalNetwork.compute_loss``, ``roi_heads.fastrcnn_loss``,
``roi_heads.maskrcnn_loss``; for the whole model, torchvision's ``MaskRCNN`` in train mode with
the same weights, targets and random state.
"""

from __future__ import annotations

import pytest
import torch
from helpers_records import check_partition
from test_targets import _proposals, grid_anchors, random_boxes, tv_roi_heads, tv_rpn
from torchvision.models.detection.roi_heads import fastrcnn_loss, maskrcnn_loss

from minimask.config import Config
from minimask.losses import mask_loss, roi_losses, rpn_losses
from minimask.targets import mask_targets, roi_targets, rpn_targets

CFG = Config.shapes()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rpn_losses_equal_compute_loss(seed):
    """Oracle: torchvision ``RegionProposalNetwork.assign_targets_to_anchors`` + ``compute_loss`` (which
    samples inside) on the same anchors, logits and deltas after the same ``torch.manual_seed``;
    two images, the second without objects."""
    gen = torch.Generator().manual_seed(seed)
    anchors = grid_anchors(128)
    gts = [random_boxes(2, 128, gen), torch.zeros(0, 4)]
    a = anchors.shape[0]
    logits = torch.randn(2 * a, 1, generator=gen, requires_grad=True)
    deltas = torch.randn(2 * a, 4, generator=gen, requires_grad=True) * 0.3
    rpn = tv_rpn(CFG)
    labels_tv, matched_tv = rpn.assign_targets_to_anchors([anchors, anchors], [{"boxes": b} for b in gts])
    reg_tv = rpn.box_coder.encode(matched_tv, [anchors, anchors])
    torch.manual_seed(seed)
    obj_tv, box_tv = rpn.compute_loss(logits, deltas, labels_tv, list(reg_tv))
    torch.manual_seed(seed)
    targets = [rpn_targets(anchors, b, CFG) for b in gts]
    got = rpn_losses(logits.reshape(2, a).unbind(0), deltas.reshape(2, a, 4).unbind(0), targets, CFG)
    torch.testing.assert_close(got.objectness, obj_tv, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got.box_reg, box_tv, rtol=1e-6, atol=1e-7)
    assert got.num_sampled == 2 * CFG.rpn_batch_size_per_image
    # same gradients too: the loss is the same function of the predictions
    g_tv = torch.autograd.grad(obj_tv + box_tv, (logits, deltas))
    g = torch.autograd.grad(got.objectness + got.box_reg, (logits, deltas))
    for x, y in zip(g, g_tv, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-8)


def test_rpn_box_loss_uses_the_configured_beta():
    """Oracle: ``torch.nn.functional.smooth_l1_loss`` by hand with beta 0 (Detectron2's L1) on the positives."""
    gen = torch.Generator().manual_seed(0)
    anchors = grid_anchors(128)
    t = rpn_targets(anchors, random_boxes(2, 128, gen), CFG.replace(rpn_smooth_l1_beta=0.0))
    deltas = torch.randn(anchors.shape[0], 4, generator=gen)
    got = rpn_losses([torch.zeros(anchors.shape[0])], [deltas], [t], CFG.replace(rpn_smooth_l1_beta=0.0))
    pos = t.sample.positive
    expected = (deltas[pos] - t.box_targets[pos]).abs().sum() / t.sample.index.numel()
    torch.testing.assert_close(got.box_reg, expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_roi_losses_equal_fastrcnn_loss(seed):
    """Oracle: torchvision ``RoIHeads.select_training_samples`` + ``fastrcnn_loss`` on the same proposals,
    class logits and box deltas, same seed."""
    gen = torch.Generator().manual_seed(seed)
    gts = [random_boxes(3, 160, gen), random_boxes(1, 160, gen)]
    labels = [torch.tensor([1, 3, 2]), torch.tensor([2])]
    props = [_proposals(g, 120, 160, gen) for g in gts]
    torch.manual_seed(seed)
    _, _, labels_tv, reg_tv = tv_roi_heads(CFG).select_training_samples(
        [p.clone() for p in props], [{"boxes": b, "labels": lab} for b, lab in zip(gts, labels, strict=True)]
    )
    torch.manual_seed(seed)
    targets = [roi_targets(p, b, lab, CFG) for p, b, lab in zip(props, gts, labels, strict=True)]
    s = sum(t.sampled_index.numel() for t in targets)
    k1 = CFG.num_classes
    class_logits = torch.randn(s, k1, generator=gen, requires_grad=True)
    box_deltas = torch.randn(s, 4 * k1, generator=gen, requires_grad=True)
    cls_tv, box_tv = fastrcnn_loss(class_logits, box_deltas, labels_tv, list(reg_tv))
    got = roi_losses(class_logits, box_deltas, targets, CFG)
    torch.testing.assert_close(got.classifier, cls_tv, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got.box_reg, box_tv, rtol=1e-6, atol=1e-7)
    assert got.num_positive == sum(int((lab > 0).sum()) for lab in labels_tv)
    # list-per-image input is the same as concatenated input
    n0 = targets[0].sampled_index.numel()
    split = roi_losses([class_logits[:n0], class_logits[n0:]], [box_deltas[:n0], box_deltas[n0:]], targets, CFG)
    torch.testing.assert_close(split.classifier, got.classifier, rtol=0, atol=0)


def test_mask_loss_equals_maskrcnn_loss():
    """Oracle: torchvision ``roi_heads.maskrcnn_loss`` on the positives of ``select_training_samples``
    (same seed), same mask logits and GT masks; and the empty case (no positives) gives 0."""
    gen = torch.Generator().manual_seed(7)
    gts = [random_boxes(2, 96, gen, min_side=12), random_boxes(1, 96, gen, min_side=12)]
    labels = [torch.tensor([3, 1]), torch.tensor([2])]
    masks = [torch.rand(g.shape[0], 96, 96, generator=gen).gt(0.4).to(torch.uint8) for g in gts]
    props = [_proposals(g, 60, 96, gen) for g in gts]
    torch.manual_seed(1)
    boxes_tv, matched_tv, labels_tv, _ = tv_roi_heads(CFG).select_training_samples(
        [p.clone() for p in props], [{"boxes": b, "labels": lab} for b, lab in zip(gts, labels, strict=True)]
    )
    pos = [torch.where(lab > 0)[0] for lab in labels_tv]
    q = sum(p.numel() for p in pos)
    logits = torch.randn(q, CFG.num_classes, 28, 28, generator=gen, requires_grad=True)
    expected = maskrcnn_loss(
        logits,
        [b[p] for b, p in zip(boxes_tv, pos, strict=True)],
        masks,
        labels,
        [m[p] for m, p in zip(matched_tv, pos, strict=True)],
    )
    torch.manual_seed(1)
    rois = [roi_targets(p, b, lab, CFG) for p, b, lab in zip(props, gts, labels, strict=True)]
    got = mask_loss(logits, [mask_targets(r, m, 28) for r, m in zip(rois, masks, strict=True)])
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    # the channel that is trained is the GT class: changing another channel changes nothing
    other = logits.detach().clone()
    other[:, 0] += 5.0
    torch.testing.assert_close(
        mask_loss(other, [mask_targets(r, m, 28) for r, m in zip(rois, masks, strict=True)]), got.detach()
    )
    # no positives: zero, but still a graph node (torchvision returns mask_logits.sum() * 0)
    empty = torch.zeros(0, CFG.num_classes, 28, 28, requires_grad=True)
    no_gt = roi_targets(props[0], torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), CFG)
    zero = mask_loss(empty, [mask_targets(no_gt, torch.zeros(0, 96, 96), 28)])
    assert zero.item() == 0.0 and zero.requires_grad


# --- whole model ----------------------------------------------------------------------------------
def _shapes_batch(with_crowd: bool = False, empty_second: bool = False):
    """Two small images with 1-3 filled rectangles/discs each (drawn here, not from minimask.data)."""
    sizes = [(160, 128), (144, 176)]
    objects = [
        [(1, (20, 30, 70, 90)), (2, (80, 40, 120, 100)), (3, (10, 100, 60, 150))],
        [] if empty_second else [(2, (30, 20, 110, 70))],
    ]
    images, targets = [], []
    gen = torch.Generator().manual_seed(0)
    for (h, w), objs in zip(sizes, objects, strict=True):
        image = torch.rand(3, h, w, generator=gen) * 0.2
        masks = torch.zeros(len(objs), h, w, dtype=torch.uint8)
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        for k, (label, (x1, y1, x2, y2)) in enumerate(objs):
            if label == 2:  # a disc inscribed in its box
                cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
                masks[k] = (((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1).to(torch.uint8)
            else:
                masks[k, y1:y2, x1:x2] = 1
            image[:, masks[k].bool()] = torch.tensor([0.9, 0.5, 0.1 * label])[:, None]
        boxes = torch.tensor([b for _, b in objs], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([lab for lab, _ in objs], dtype=torch.int64)
        images.append(image)
        targets.append({"boxes": boxes, "labels": labels, "masks": masks})
    if with_crowd:  # a crowd region overlapping the first image's objects
        t = targets[0]
        crowd_mask = torch.zeros(1, *t["masks"].shape[1:], dtype=torch.uint8)
        crowd_mask[0, 25:95, 15:125] = 1
        targets[0] = {
            "boxes": torch.cat((t["boxes"], torch.tensor([[15.0, 25.0, 125.0, 95.0]]))),
            "labels": torch.cat((t["labels"], torch.tensor([1]))),
            "masks": torch.cat((t["masks"], crowd_mask)),
            "iscrowd": torch.tensor([0, 0, 0, 1]),
        }
    return images, targets


def _models(cfg: Config, builder: str = "compat"):
    """Ours (train mode) and torchvision's MaskRCNN with the same state dict.

    ``builder``: "compat" uses ``minimask.compat.torchvision_model``; "own" assembles torchvision's
    model from its classes here (independent of compat). The RPN head's output layers get larger
    random weights so that objectness varies from anchor to anchor (a fresh head predicts ~0
    everywhere, which would leave the longlist's ranking untested).
    """
    from minimask.model import MaskRCNN

    torch.manual_seed(0)
    ours = MaskRCNN(cfg).train()
    with torch.no_grad():
        for layer in (ours.rpn.head.cls_logits, ours.rpn.head.bbox_pred):
            layer.weight.normal_(0.0, 0.1)
    if builder == "compat":
        from minimask.compat import torchvision_model

        tv = torchvision_model(cfg)
    else:
        tv = _torchvision_model(cfg)
    tv.load_state_dict(ours.state_dict())
    return ours, tv.train()


def _torchvision_model(cfg: Config):
    """torchvision MaskRCNN assembled from its own classes for a Config (a check independent of compat)."""
    from torchvision.models.detection import MaskRCNN as TvMaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops import MultiScaleRoIAlign

    from minimask.backbone import build_backbone

    c, names = cfg.fpn_out_channels, ["0", "1", "2", "3"]
    levels = {"canonical_scale": cfg.canonical_scale, "canonical_level": cfg.canonical_level}
    return TvMaskRCNN(
        build_backbone(cfg), None, min_size=cfg.min_size, max_size=cfg.max_size,
        image_mean=list(cfg.image_mean), image_std=list(cfg.image_std),
        rpn_anchor_generator=AnchorGenerator(cfg.anchor_sizes, (cfg.aspect_ratios,) * len(cfg.anchor_sizes)),
        rpn_head=RPNHead(c, len(cfg.anchor_sizes[0]) * len(cfg.aspect_ratios), cfg.rpn_head_conv_depth),
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train, rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train, rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_nms_thresh=cfg.rpn_nms_thresh, rpn_fg_iou_thresh=cfg.rpn_fg_iou_thresh,
        rpn_bg_iou_thresh=cfg.rpn_bg_iou_thresh, rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        rpn_positive_fraction=cfg.rpn_positive_fraction, rpn_score_thresh=cfg.rpn_score_thresh,
        box_roi_pool=MultiScaleRoIAlign(names, cfg.box_roi_output_size, cfg.box_roi_sampling_ratio, **levels),
        box_head=TwoMLPHead(c * cfg.box_roi_output_size**2, cfg.box_head_dim),
        box_predictor=FastRCNNPredictor(cfg.box_head_dim, cfg.num_classes),
        box_score_thresh=cfg.box_score_thresh, box_nms_thresh=cfg.box_nms_thresh,
        box_detections_per_img=cfg.box_detections_per_img, box_fg_iou_thresh=cfg.box_fg_iou_thresh,
        box_bg_iou_thresh=cfg.box_bg_iou_thresh, box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_positive_fraction=cfg.box_positive_fraction, bbox_reg_weights=cfg.bbox_reg_weights,
        mask_roi_pool=MultiScaleRoIAlign(names, cfg.mask_roi_output_size, cfg.mask_roi_sampling_ratio, **levels),
        mask_head=MaskRCNNHeads(c, list(cfg.mask_head_layers), cfg.mask_head_dilation),
        mask_predictor=MaskRCNNPredictor(cfg.mask_head_layers[-1], cfg.mask_predictor_dim, cfg.num_classes),
    )  # fmt: skip


LOSS_KEYS = ["loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"]


@pytest.mark.parametrize("empty_second, builder", [(False, "compat"), (True, "compat"), (False, "own")])
def test_whole_model_losses_equal_torchvision(empty_second, builder):
    """Oracle: torchvision ``MaskRCNN`` (train mode) built from ``Config.shapes()`` with our state dict,
    the same images and targets, after the same ``torch.manual_seed``: the five losses agree to 1e-5,
    and so do the gradients of their sum (the second image may have no objects)."""
    cfg = Config.shapes()
    ours, tv = _models(cfg, builder)
    images, targets = _shapes_batch(empty_second=empty_second)
    torch.manual_seed(1)
    expected = tv([im.clone() for im in images], [{k: v.clone() for k, v in t.items()} for t in targets])
    state_tv = torch.get_rng_state()
    torch.manual_seed(1)
    got = ours(images, targets)
    # the random stream advanced exactly as torchvision's did (same draws, same order)
    assert torch.equal(torch.get_rng_state(), state_tv)
    assert sorted(got) == sorted(LOSS_KEYS)
    for key in LOSS_KEYS:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-5, msg=key)
    sum(expected.values()).backward()
    sum(got.values()).backward()
    grads_tv = dict(tv.named_parameters())
    for name, p in ours.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, grads_tv[name].grad, rtol=1e-3, atol=1e-5, msg=name)


def test_crowd_objects_do_not_change_the_losses():
    """Oracle: torchvision ``MaskRCNN`` on the same batch WITHOUT the crowd object (what torchvision's
    reference scripts feed it after filtering crowd annotations); ours gets it with iscrowd=1."""
    ours, tv = _models(Config.shapes())
    images, crowded = _shapes_batch(with_crowd=True)
    _, plain = _shapes_batch()
    torch.manual_seed(2)
    expected = tv([im.clone() for im in images], plain)
    torch.manual_seed(2)
    got = ours(images, crowded)
    for key in LOSS_KEYS:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-5, msg=key)


def test_training_run_records_are_consistent():
    """Oracles: the train-mode forward (same seed: the same losses, exactly) and the records' own
    invariants: sampled counts, fates partitioning anchors and RoIs, links between the records."""
    ours, _ = _models(Config.shapes())
    images, targets = _shapes_batch(with_crowd=True)
    torch.manual_seed(3)
    run = ours.run(images, targets)
    torch.manual_seed(3)
    expected = ours.train()(images, targets)
    ours.eval()
    assert list(run.losses) == list(LOSS_KEYS)
    for key in LOSS_KEYS:
        assert torch.equal(run.losses[key], expected[key]), key
    assert run.crowd_dropped[0].tolist() == [3] and run.crowd_dropped[1].numel() == 0
    assert run.shortlist is None and run.scores is None  # absent in a training run
    with pytest.raises(ValueError, match="training run"):
        _ = run.detections
    cfg = ours.config
    records = zip(
        run.rpn_targets, run.roi_targets, run.mask_targets, run.longlist, run.classification, run.segmentation,
        strict=True,
    )  # fmt: skip
    for rpn, roi, masks, ll, cls, seg in records:
        assert rpn.sample.index.numel() == cfg.rpn_batch_size_per_image
        check_partition(rpn, rpn.sample.index)
        check_partition(roi, roi.sampled_index)
        assert roi.boxes.shape[0] == ll.boxes.shape[0] + roi.gt_boxes.shape[0]
        assert masks.boxes.shape[0] == int((roi.sampled_labels > 0).sum()) == roi.sample.positive.numel()
        # classification rows are the sampled RoIs, linked to the longlist (-1: a GT box)
        assert torch.equal(cls.proposal_boxes, roi.sampled_boxes)
        assert torch.equal(cls.proposal_index, roi.proposal_index[roi.sampled_index])
        linked = cls.proposal_index >= 0
        assert torch.equal(cls.proposal_boxes[linked], ll.boxes[cls.proposal_index[linked]].detach())
        # mask rows are the positive RoIs, linked to their classification rows
        assert torch.equal(seg.detection_index, masks.classification_index)
        assert torch.equal(seg.boxes, cls.proposal_boxes[masks.classification_index])
        assert torch.equal(seg.labels, roi.sampled_labels[masks.classification_index])
    assert run.rpn_loss.num_sampled == 2 * cfg.rpn_batch_size_per_image


def test_loss_goes_down_with_sgd():
    """Oracle: optimisation itself. 15 SGD steps on two fixed images lower the summed loss (measured
    under the same seed before and after), and every loss stays finite."""
    torch.manual_seed(0)
    from minimask.model import MaskRCNN

    model = MaskRCNN(Config.shapes()).train()
    images, targets = _shapes_batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)

    def total(seed: int) -> float:
        torch.manual_seed(seed)
        with torch.no_grad():
            return float(sum(model(images, targets).values()))

    before = total(100)
    for it in range(15):
        torch.manual_seed(it)
        losses = model(images, targets)
        assert all(torch.isfinite(v) for v in losses.values())
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    after = total(100)
    assert after < 0.7 * before, (before, after)


# --- target validation ----------------------------------------------------------------------------
def _bad(**change):
    images, targets = _shapes_batch()
    targets[1] = {**targets[1], **change}
    return images, targets


@pytest.mark.parametrize(
    "change, error, pattern",
    [
        ({"boxes": torch.zeros(1, 5)}, ValueError, r"targets\[1\]\['boxes'\] must have shape \[B, 4\]"),
        ({"boxes": torch.tensor([[30, 20, 110, 70]])}, TypeError, r"targets\[1\]\['boxes'\] must be a float"),
        ({"boxes": torch.tensor([[30.0, 20.0, 30.0, 70.0]])}, ValueError, r"targets\[1\]\['boxes'\]\[0\].*degenerate"),
        ({"boxes": torch.tensor([[30.0, 20.0, 110.0, float("nan")]])}, ValueError, r"\[0\].*not finite"),
        ({"labels": torch.tensor([7])}, ValueError, r"targets\[1\]\['labels'\]\[0\] = 7 is out of range: must be in 1..6"),
        ({"labels": torch.tensor([0])}, ValueError, r"0 is background"),
        ({"labels": torch.tensor([1.0])}, TypeError, r"integer"),
        ({"labels": torch.tensor([1, 2])}, ValueError, r"\['labels'\] must have shape \[1\]"),
        ({"masks": torch.zeros(1, 144, 170)}, ValueError, r"\['masks'\] must have shape \[1, 144, 176\]"),
        ({"masks": torch.zeros(2, 144, 176)}, ValueError, r"\['masks'\] must have shape"),
    ],
)  # fmt: skip
def test_check_targets_names_the_problem(change, error, pattern):
    """Oracle: the documented target contract (torchvision's, with named indices); each bad field raises
    our own error naming the image, key and box."""
    from minimask.transform import check_targets

    images, targets = _bad(**change)
    with pytest.raises(error, match=pattern):
        check_targets(images, targets, Config.shapes())


def test_check_targets_structure():
    """Oracle: the documented contract: one dict per image, with boxes, labels and masks."""
    from minimask.transform import check_targets

    images, targets = _shapes_batch()
    cfg = Config.shapes()
    with pytest.raises(ValueError, match="2 images"):
        check_targets(images, targets[:1], cfg)
    with pytest.raises(ValueError, match=r"targets\[0\] has no 'masks'"):
        check_targets(images, [{"boxes": targets[0]["boxes"], "labels": targets[0]["labels"]}, targets[1]], cfg)
    with pytest.raises(TypeError, match="list of dicts"):
        check_targets(images, targets[0], cfg)
    out = check_targets(images, [{**t, "labels": t["labels"].int()} for t in targets], cfg)
    assert all(t["labels"].dtype == torch.int64 for t in out)
    # the model's train-mode forward runs these checks before anything else
    from minimask.model import MaskRCNN

    model = MaskRCNN(cfg).train()
    with pytest.raises(ValueError, match=r"targets\[1\]\['boxes'\]\[0\].*degenerate"):
        model(*_bad(boxes=torch.tensor([[30.0, 70.0, 110.0, 20.0]])))
    with pytest.raises(ValueError, match="at least one image"):
        model([], [])

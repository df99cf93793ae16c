"""The whole model against torchvision's Mask R-CNN with the same weights (minGPT's test).

Oracles: torchvision ``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)`` seeded,
and torchvision ``MaskRCNN`` built by ``compat.torchvision_model(Config.shapes())``; our
model gets their state dict. Compared: boxes (1e-4 px), labels (equal), scores (1e-5),
masks (>= 99.9 % of pixels agree at 0.5), and each stage against torchvision's own pieces
(``box_roi_pool``, ``box_head``/``box_predictor``, ``postprocess_detections``,
``maskrcnn_inference``, ``transform.postprocess``) on the same intermediate tensors.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision
from torchvision.models.detection.roi_heads import maskrcnn_inference, paste_masks_in_image
from torchvision.ops.misc import FrozenBatchNorm2d

import minimask
from minimask import Config, MaskRCNN, compat
from minimask.data import noise_images


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for this module: on a 2-core machine shared with other processes, two
    OpenMP threads make these forwards about 5x slower (13 s vs 70 s measured); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_same_detections(expected: list[dict], ours: list[dict], min_count: int = 1) -> None:
    assert len(expected) == len(ours)
    for e, o in zip(expected, ours, strict=True):
        assert len(e["boxes"]) == len(o["boxes"]) >= min_count
        torch.testing.assert_close(o["boxes"], e["boxes"], rtol=0, atol=1e-4)
        assert torch.equal(o["labels"], e["labels"])
        torch.testing.assert_close(o["scores"], e["scores"], rtol=0, atol=1e-5)
        assert o["masks"].shape == e["masks"].shape
        if len(e["masks"]):
            agree = ((o["masks"] >= 0.5) == (e["masks"] >= 0.5)).float().mean().item()
            assert agree >= 0.999
            assert float((o["masks"] - e["masks"]).abs().max()) <= 1e-5


def images(seed: int, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    return noise_images(seed, sizes)


# --- the COCO architecture, random weights --------------------------------------------------
@pytest.fixture(scope="module")
def r50():
    """Seeded torchvision maskrcnn_resnet50_fpn (small images: min 320, max 480) and our copy."""
    torch.manual_seed(0)
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        min_size=320,
        max_size=480,
        rpn_post_nms_top_n_test=500,
        box_detections_per_img=60,
    ).eval()
    ours = compat.from_torchvision(tv)
    return tv, ours


@pytest.fixture(scope="module")
def r50_outputs(r50):
    tv, ours = r50
    batch = images(1, [(300, 400), (260, 330)])
    single = images(2, [(480, 360)])
    with torch.no_grad():
        expected = tv(batch) + tv(single)
    run = ours.run(batch)
    return batch, run, expected, ours(single)


def test_state_dict_names_equal_torchvision(r50):
    """Oracle: torchvision MaskRCNN's state dict: the same keys, in the same order, same shapes."""
    tv, ours = r50
    assert list(ours.state_dict()) == list(tv.state_dict())
    assert all(v.shape == tv.state_dict()[k].shape for k, v in ours.state_dict().items())
    shapes_tv = compat.torchvision_model(Config.shapes())
    assert list(MaskRCNN(Config.shapes()).state_dict()) == list(shapes_tv.state_dict())


def test_resnet50_same_outputs_as_torchvision(r50_outputs):
    """Oracle: torchvision maskrcnn_resnet50_fpn, same weights, 3 images of 3 sizes (a batch of 2 + 1)."""
    batch, run, expected, single = r50_outputs
    assert_same_detections(expected, run.detections + single, min_count=50)


def test_resnet50_stages_equal_torchvision_pieces(r50, r50_outputs):
    """Oracle: torchvision's own stage modules on our intermediate tensors: transform, backbone,
    rpn, box_roi_pool, box_head + box_predictor, postprocess_detections, mask branch, postprocess."""
    tv, _ = r50
    batch, run, _, _ = r50_outputs
    heads = tv.roi_heads
    with torch.no_grad():
        image_list, _ = tv.transform(batch)
        torch.testing.assert_close(run.batch.tensors, image_list.tensors, rtol=0, atol=0)
        features = tv.backbone(image_list.tensors)
        for name, fmap in features.items():
            torch.testing.assert_close(run.features.maps[name], fmap, rtol=0, atol=0)
        proposals, _ = tv.rpn(image_list, features)
        for ll, p in zip(run.longlist, proposals, strict=True):
            torch.testing.assert_close(ll.boxes, p, rtol=0, atol=0)
        sizes = image_list.image_sizes
        pooled = heads.box_roi_pool(features, proposals, sizes)
        ours_pooled = minimask.pooling.roi_pool(
            run.features.maps, [ll.boxes for ll in run.longlist], sizes, 7, 2, r50[1].config
        )
        torch.testing.assert_close(ours_pooled.features, pooled, rtol=0, atol=0)
        logits, deltas = heads.box_predictor(heads.box_head(pooled))
        torch.testing.assert_close(torch.cat([c.logits for c in run.classification]), logits, rtol=0, atol=0)
        boxes, scores, labels = heads.postprocess_detections(logits, deltas, proposals, sizes)
        for s, b, sc, lb in zip(run.shortlist, boxes, scores, labels, strict=True):
            torch.testing.assert_close(s.boxes, b, rtol=0, atol=0)
            torch.testing.assert_close(s.scores, sc, rtol=0, atol=0)
            assert torch.equal(s.labels, lb)
        mask_logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(features, boxes, sizes)))
        probs = maskrcnn_inference(mask_logits, labels)
        for seg, pr, orig in zip(run.segmentation, probs, run.batch.original_sizes, strict=True):
            torch.testing.assert_close(seg.probs, pr[:, 0], rtol=0, atol=0)
            torch.testing.assert_close(seg.masks, paste_masks_in_image(pr, seg.boxes_orig, orig), rtol=0, atol=1e-6)


def test_run_records_lineage(r50_outputs):
    """Property: each detection's score is its proposal's softmax entry for its label, its box is
    that proposal's refined box for the label, and the record chain links back to anchors."""
    _, run, _, _ = r50_outputs
    for obj, ll, c, s, sc in zip(
        run.objectness, run.longlist, run.classification, run.shortlist, run.scores, strict=True
    ):
        assert torch.equal(c.probs[s.proposal_index, s.labels], s.scores)
        assert torch.equal(c.boxes[s.proposal_index, s.labels], s.boxes)
        assert torch.equal(c.proposal_boxes, ll.boxes)
        anchors = ll.anchor_index[s.proposal_index]
        assert torch.equal(sc.objectness, torch.sigmoid(obj.logits[anchors]))
        torch.testing.assert_close(sc.score + sc.background + sc.other_classes, torch.ones_like(sc.score))


# --- the shapes preset, random weights -------------------------------------------------------
@pytest.fixture(scope="module")
def shapes():
    torch.manual_seed(0)
    tv = compat.torchvision_model(Config.shapes()).eval()
    return tv, compat.from_torchvision(tv)


def test_shapes_same_outputs_as_torchvision(shapes):
    """Oracle: torchvision MaskRCNN built from Config.shapes() (small backbone), same weights."""
    tv, ours = shapes
    assert ours.config == Config.shapes()
    batch = images(3, [(192, 192), (150, 220), (230, 170)])
    with torch.no_grad():
        expected = tv(batch)
    assert_same_detections(expected, ours(batch), min_count=50)


def test_config_is_read_at_every_forward(shapes):
    """Oracle: torchvision with the same thresholds set on its modules; a replaced config changes
    the next forward (fewer detections), and a score threshold of 1 gives none at all."""
    tv, ours = shapes
    batch = images(4, [(192, 192), (120, 200)])
    base = ours.config
    try:
        ours.config = dataclasses.replace(base, box_score_thresh=0.3, box_nms_thresh=0.3, box_detections_per_img=17)
        tv.roi_heads.score_thresh, tv.roi_heads.nms_thresh, tv.roi_heads.detections_per_img = 0.3, 0.3, 17
        with torch.no_grad():
            expected = tv(batch)
        assert_same_detections(expected, ours(batch), min_count=0)
        assert all(len(o["boxes"]) <= 17 for o in expected)
        ours.config = base.replace(box_score_thresh=1.0)
        tv.roi_heads.score_thresh = 1.0
        with torch.no_grad():
            expected = tv(batch)
        out = ours(batch)
        assert_same_detections(expected, out, min_count=0)
        assert out[1]["boxes"].shape == (0, 4) and out[1]["masks"].shape == (0, 1, 120, 200)
    finally:
        ours.config = base
        tv.roi_heads.score_thresh, tv.roi_heads.nms_thresh = base.box_score_thresh, base.box_nms_thresh
        tv.roi_heads.detections_per_img = base.box_detections_per_img


def test_no_images_gives_no_outputs(shapes):
    """A batch of no images flows through every stage and returns empty lists."""
    _, ours = shapes
    run = ours.run([])
    assert ours([]) == [] and run.shortlist == [] and run.segmentation == [] and run.scores == []


def test_to_torchvision_round_trip(shapes):
    """Oracle: torchvision MaskRCNN made by to_torchvision from our model decides as ours does."""
    _, ours = shapes
    back = compat.to_torchvision(ours)
    for k, v in ours.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    batch = images(5, [(200, 180)])
    with torch.no_grad():
        assert_same_detections(back(batch), ours(batch), min_count=1)


def test_train_mode_returns_the_training_runs_losses(shapes, monkeypatch):
    """The train-mode forward is ``run(images, targets).losses`` (one chain), and needs targets."""
    _, ours = shapes
    calls = []

    class FakeRun:
        losses = {"x": 1}

    monkeypatch.setattr(type(ours), "run", lambda self, i, t=None: calls.append((self, i, t)) or FakeRun())
    ours.train()
    try:
        assert ours([torch.zeros(3, 8, 8)], [{}]) == {"x": 1} and calls[0][0] is ours and calls[0][2] == [{}]
        with pytest.raises(ValueError, match="targets"):
            ours([torch.zeros(3, 8, 8)])
    finally:
        ours.eval()


# --- compat --------------------------------------------------------------------------------------
def test_config_from_torchvision_reads_every_setting():
    """Oracle: the keyword arguments a torchvision MaskRCNN was built with."""
    cfg = Config.shapes().replace(
        min_size=160, max_size=200, image_mean=(0.5, 0.4, 0.3), image_std=(0.2, 0.3, 0.25), size_divisible=64,
        anchor_sizes=((6,), (12,), (24,), (48,), (96,)), aspect_ratios=(0.5, 1.0, 2.0, 3.0),
        rpn_pre_nms_top_n_train=300, rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_train=150,
        rpn_post_nms_top_n_test=100, rpn_nms_thresh=0.6, rpn_score_thresh=0.01, rpn_fg_iou_thresh=0.6,
        rpn_bg_iou_thresh=0.2, rpn_batch_size_per_image=128, rpn_positive_fraction=0.4, rpn_min_size=0.5,
        box_score_thresh=0.1, box_nms_thresh=0.4, box_detections_per_img=50, box_fg_iou_thresh=0.6,
        box_bg_iou_thresh=0.4, box_batch_size_per_image=32, box_positive_fraction=0.3,
        bbox_reg_weights=(8.0, 8.0, 4.0, 4.0), box_roi_output_size=5, box_roi_sampling_ratio=0,
        mask_roi_output_size=12, mask_roi_sampling_ratio=3, mask_head_layers=(32, 48), mask_head_dilation=2,
        mask_predictor_dim=40, num_classes=7, box_head_dim=96, rpn_head_conv_depth=2, canonical_scale=112,
        canonical_level=3, trainable_backbone_layers=3, backbone_norm="frozen", frozen_bn_eps=0.0,
    )  # fmt: skip
    tv = compat.torchvision_model(cfg)
    assert compat.config_from_torchvision(tv) == cfg
    assert compat.from_torchvision(tv).config == cfg


def test_config_from_state_dict_infers_the_architecture():
    """Oracle: the Config the state dict's model was built from (architecture fields)."""
    cfg = Config.shapes().replace(mask_head_layers=(16, 24, 8), box_head_dim=48, num_classes=3)
    sd = MaskRCNN(cfg).state_dict()
    inferred = compat.config_from_state_dict(sd, base=Config(anchor_sizes=cfg.anchor_sizes))
    for name in (
        "backbone",
        "backbone_stem",
        "backbone_widths",
        "fpn_out_channels",
        "fpn_norm",
        "num_classes",
        "box_head_dim",
        "box_roi_output_size",
        "mask_head_layers",
        "mask_predictor_dim",
        "backbone_norm",
    ):
        assert getattr(inferred, name) == getattr(cfg, name), name
    model = compat.from_torchvision(sd, cfg)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())


def test_compat_errors_name_the_keys():
    """Bad state dicts fail with ValueError naming missing, unexpected and mis-shaped keys."""
    sd = MaskRCNN(Config.shapes()).state_dict()
    broken = dict(sd)
    del broken["roi_heads.box_head.fc6.bias"]
    broken["roi_heads.extra.weight"] = torch.zeros(1)
    broken["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(9, 256)
    with pytest.raises(ValueError) as err:
        compat.from_torchvision(broken, Config.shapes())
    msg = str(err.value)
    assert "missing keys: roi_heads.box_head.fc6.bias" in msg
    assert "unexpected keys: roi_heads.extra.weight" in msg
    assert "roi_heads.box_predictor.cls_score.weight: (9, 256) given, (7, 256) expected" in msg
    with pytest.raises(TypeError):
        compat.from_torchvision([1, 2, 3])
    with pytest.raises(TypeError):
        compat.to_torchvision(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="roi_aligned"):
        compat.torchvision_model(Config.shapes().replace(roi_aligned=True))
    with pytest.raises(ValueError, match="not a torchvision Mask R-CNN|has no"):
        compat.config_from_state_dict({"backbone.body.conv1.weight": torch.zeros(1)})


def test_load_coco_weights_without_downloading(monkeypatch):
    """The COCO loader, with the download replaced by a random torchvision state dict: it asks for
    the COCO_V1 file, builds FrozenBatchNorm2d with eps 0.0 (as torchvision's builder) and loads it."""
    import torchvision.models._api as api

    torch.manual_seed(0)
    state = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    asked = []

    def fake_download(url, *args, **kwargs):
        asked.append(url)
        return state

    monkeypatch.setattr(api, "load_state_dict_from_url", fake_download)
    model = compat.load_coco_weights(progress=False)
    weights = torchvision.models.detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1
    assert asked == [weights.url] and not model.training
    frozen = [m for m in model.backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen and all(m.eps == 0.0 for m in frozen)
    ours = model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in state.items() if k in ours)
    assert len(compat.coco_categories()) == 91

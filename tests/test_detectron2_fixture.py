"""``compat.from_detectron2`` against Detectron2 itself: fixtures that Detectron2 made.

Each directory under ``data/detectron2/`` holds the weights of a checkpoint saved by
Detectron2's ``DetectionCheckpointer`` (as ``model_final.safetensors``: no pickle), its ``config.yaml`` (``cfg.dump()``), images and what Detectron2
computed on them (``outputs.json``: ``DefaultPredictor``'s instances, the RPN's proposals with
their objectness logits, and the kept proposal rows of ``box_predictor.inference``); its
``PROVENANCE.md`` says how (``tools/detectron2_fixture.py``). Our model, loaded from those two
files alone, must give the same proposals, the same detections (boxes, scores, classes) in
the same order, the same kept rows and the same masks.

``MINIMASK_DETECTRON2_FIXTURES`` (directories separated by ``:``) adds fixtures kept outside
the repository, e.g. one per model-zoo variant.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from minimask.compat import from_detectron2

ROOT = Path(__file__).resolve().parents[1] / "data" / "detectron2"
FIXTURES = sorted(p for p in ROOT.iterdir() if (p / "outputs.json").is_file()) if ROOT.is_dir() else []
FIXTURES += [Path(p) for p in os.environ.get("MINIMASK_DETECTRON2_FIXTURES", "").split(":") if p]


def test_the_repository_holds_fixtures_made_by_detectron2():
    """The model zoo's R50-FPN, and variants with other code paths: sigmoid scores,
    class-agnostic heads, legacy RoIAlign (Detectron1-Comparisons)."""
    names = {p.name for p in FIXTURES}
    assert {"R50-FPN", "R50-FPN-sigmoid", "R50-FPN-cls-agnostic", "D1-R50-FPN"} <= names, names
    for name in ("R50-FPN", "R50-FPN-sigmoid", "R50-FPN-cls-agnostic", "D1-R50-FPN"):
        provenance = (ROOT / name / "PROVENANCE.md").read_text()
        assert "DefaultPredictor" in provenance and "commit 02b5c4e" in provenance, name
        assert "sha256" in provenance and not (ROOT / name / "model_final.pth").exists(), "no pickle shipped"
    checked = json.loads((ROOT / "checked.json").read_text())
    assert {n for n, c in checked.items() if c["in_repository"]} == names & set(checked)


@pytest.fixture(scope="module", params=FIXTURES, ids=[p.name for p in FIXTURES])
def loaded(request):
    root = request.param
    model = from_detectron2(root / "model_final.safetensors", root / "config.yaml")
    records = json.loads((root / "outputs.json").read_text())
    runs = []
    for rec in records:
        rgb = np.asarray(Image.open(root / "images" / rec["file_name"]).convert("RGB"))
        image = torch.from_numpy(rgb.copy()).permute(2, 0, 1)  # uint8 RGB, our contract
        with torch.no_grad():
            runs.append(model.run([image]))
    return model, records, runs


def _same_rows(ours: torch.Tensor, theirs: torch.Tensor, key_ours: torch.Tensor, key_theirs: torch.Tensor, atol: float):
    """Rows equal in order, except that two rows whose sort keys tie to float noise (< 1e-5) may
    swap: another thread count sums a convolution in another order (differences ~1e-7)."""
    assert ours.shape == theirs.shape
    torch.testing.assert_close(key_ours.float(), key_theirs.float(), atol=1e-4, rtol=0)
    for i in ((ours - theirs).abs() > atol).any(dim=1).nonzero().flatten().tolist():
        tied = ((key_theirs - key_ours[i]).abs() < 1e-5) & ((theirs - ours[i]).abs() <= atol).all(dim=1)
        assert tied.any(), f"row {i}: {ours[i].tolist()} is not among Detectron2's rows of the same score"


def test_the_same_proposals_and_objectness(loaded):
    model, records, runs = loaded
    for rec, run in zip(records, runs, strict=True):
        longlist = run.longlist[0]
        assert list(run.batch.image_sizes[0]) == rec["resized"]
        theirs, logits = torch.tensor(rec["proposal_boxes"]), torch.tensor(rec["objectness_logits"])
        _same_rows(longlist.boxes, theirs, longlist.logits, logits, atol=1e-3)


def test_the_same_detections_in_the_same_order(loaded):
    model, records, runs = loaded
    for rec, run in zip(records, runs, strict=True):
        det = run.detections[0]
        assert len(det["boxes"]) == len(rec["boxes"]) > 0
        theirs = torch.cat([torch.tensor(rec["boxes"]), torch.tensor(rec["classes"])[:, None] + 1.0], dim=1)
        ours = torch.cat([det["boxes"], det["labels"][:, None].float()], dim=1)  # Detectron2 counts from 0
        _same_rows(ours, theirs, det["scores"], torch.tensor(rec["scores"]), atol=1e-3)


def test_the_same_kept_proposal_rows(loaded):
    """The rows ``fast_rcnn_inference`` keeps (``StandardROIHeads`` drops them; the fixture
    called ``box_predictor.inference`` itself): our shortlist's proposal of each detection."""
    model, records, runs = loaded
    for rec, run in zip(records, runs, strict=True):
        ours, theirs = run.shortlist[0].proposal_index, torch.tensor(rec["kept"])
        scores = run.shortlist[0].scores
        _same_rows(ours[:, None].float(), theirs[:, None].float(), scores, torch.tensor(rec["scores"]), atol=0.0)


def test_the_same_masks(loaded):
    model, records, runs = loaded
    for rec, run in zip(records, runs, strict=True):
        ours = run.detections[0]["masks"][:, 0] >= 0.5
        theirs = torch.from_numpy(mask_utils.decode(rec["masks"])).permute(2, 0, 1).bool()
        assert ours.shape == theirs.shape
        differ = (ours != theirs).sum().item()
        assert theirs.sum() > 0 and differ <= 1e-4 * theirs.numel(), (differ, int(theirs.sum()))

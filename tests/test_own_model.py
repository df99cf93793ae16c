"""Chapter 12: ``minimask.evaluate --detectron2`` and the chapter's figures (``minimask.viz.own``).

Oracles: the command's exit status and its one-line errors (as ``minimask.predict``'s
``--detectron2``/``--config`` rules); its report on a tiny COCO folder of one fixture image
made by Detectron2 (``data/detectron2/R50-FPN``), whose 80 categories let the model's label k
stand for the k-th category; and, for the figures, the artists on the returned Figure.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.patches import Rectangle

from minimask import evaluate
from minimask.data import SHAPES_VAL
from minimask.viz import GT_STYLE, class_color, own

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "detectron2" / "R50-FPN"
CHECKPOINT, CONFIG = str(FIXTURE / "model_final.safetensors"), str(FIXTURE / "config.yaml")


def _fails(capsys, argv: list[str]) -> str:
    """The one line ``evaluate.main(argv)`` stops with (exit status 2)."""
    with pytest.raises(SystemExit) as stop:
        evaluate.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_config_needs_detectron2(capsys):
    assert "--config needs --detectron2" in _fails(capsys, ["--config", CONFIG])


def test_weights_and_detectron2_are_exclusive(capsys):
    err = _fails(capsys, ["--weights", "shapes", "--detectron2", CHECKPOINT])
    assert "--weights and --detectron2" in err


def test_a_missing_checkpoint_is_named(capsys, tmp_path):
    missing = tmp_path / "nowhere.pth"
    err = _fails(capsys, ["--detectron2", str(missing), "--config", CONFIG])
    assert "--detectron2" in err and str(missing) in err


def test_a_model_of_other_classes_than_the_data_is_refused(capsys):
    """80 COCO classes against the shapes split's 6 categories: both numbers in one line."""
    err = _fails(capsys, ["--detectron2", CHECKPOINT, "--config", CONFIG, "--data", str(SHAPES_VAL)])
    assert "80 classes" in err and "6 categories" in err


def _tiny_folder(root: Path, image_id: int = 1, categories: int = 80) -> Path:
    """A COCO folder with one shapes val image, its objects, and ``categories`` categories:
    the six shapes first (ids 1..6), then empty ones."""
    val = json.loads((SHAPES_VAL / "annotations.json").read_text())
    image = next(im for im in val["images"] if im["id"] == image_id)
    extra = [{"id": k, "name": f"unused {k}"} for k in range(len(val["categories"]) + 1, categories + 1)]
    (root / "images").mkdir(parents=True)
    shutil.copy(SHAPES_VAL / "images" / image["file_name"], root / "images" / image["file_name"])
    tiny = {
        "images": [image],
        "categories": val["categories"] + extra,
        "annotations": [a for a in val["annotations"] if a["image_id"] == image_id],
    }
    (root / "annotations.json").write_text(json.dumps(tiny))
    return root


@pytest.mark.slow
def test_a_detectron2_model_is_evaluated_on_a_tiny_coco_folder(tmp_path, capsys):
    data = _tiny_folder(tmp_path / "tiny")
    report_file = tmp_path / "report.json"
    argv = ["--detectron2", CHECKPOINT, "--config", CONFIG, "--data", str(data), "--threads", "1",
            "--explain", "--out", str(report_file)]  # fmt: skip
    assert evaluate.main(argv) == 0
    report = json.loads(report_file.read_text())
    assert report["weights"] == CHECKPOINT and report["data"] == str(data)
    assert report["images"] == 1 and report["detections"] == 100  # DefaultPredictor's 100 (outputs.json)
    assert {"bbox", "segm", "explain"} <= set(report)
    assert -1.0 <= report["segm"]["AP"] <= 1.0
    assert "square" in capsys.readouterr().out  # the data set's names for the model's labels 1..6


# --- the figures -----------------------------------------------------------------------------------------
def _output(n: int, offset: float = 0.0) -> dict[str, torch.Tensor]:
    boxes = torch.tensor([[10.0 + 20 * i, 10.0, 25.0 + 20 * i, 30.0] for i in range(n)]) + offset
    return {"boxes": boxes, "labels": torch.arange(1, n + 1), "scores": torch.linspace(0.9, 0.2, n)}


def _rectangles(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_parity_draws_the_best_boxes_of_both_and_one_point_per_detection():
    image = torch.rand(3, 60, 200)
    ours, theirs = _output(5), _output(5, offset=0.5)
    pairs = [(ours["scores"].tolist(), theirs["scores"].tolist()), ([0.3, 0.4], [0.3, 0.41])]
    fig = own.parity(image, ours, theirs, pairs, top=3)
    left, right = fig.axes
    boxes = _rectangles(left)
    assert len(boxes) == 6  # the best 3 of each
    assert [b.get_edgecolor() for b in boxes[:3]] == [plt.matplotlib.colors.to_rgba(class_color(k)) for k in (1, 2, 3)]
    assert all(b.get_linestyle() == GT_STYLE["linestyle"] for b in boxes[3:])
    points = [c for c in right.collections if isinstance(c, PathCollection)]
    assert [len(c.get_offsets()) for c in points] == [5, 2]
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["image 1", "image 2"]
    assert right.get_xlabel() == "Detectron2's score" and right.get_ylabel() == "our score"
    assert fig.get_size_inches()[0] * fig.dpi <= 640
    plt.close(fig)


def test_thresholds_one_panel_per_threshold_with_its_count():
    image = torch.rand(3, 40, 120)
    fig = own.thresholds(image, {0.05: _output(5), 0.3: _output(2), 0.4: _output(0)})
    assert [ax.get_title() for ax in fig.axes] == ["score > 0.05: 5", "score > 0.3: 2", "score > 0.4: 0"]
    assert [len(_rectangles(ax)) for ax in fig.axes] == [5, 2, 0]
    plt.close(fig)


def test_agreement_bars_one_bar_per_cause_with_its_percentage():
    fig = own.agreement_bars(["a", "b", "c"], [1.0, 0.98, 0.29])
    ax = fig.axes[0]
    assert [round(p.get_width()) for p in _rectangles(ax)] == [100, 98, 29]
    assert [t.get_text() for t in ax.texts] == ["100%", "98%", "29%"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert ax.get_xlim()[0] == 0 and ax.get_xlim()[1] > 100
    plt.close(fig)


def test_count_bars_one_bar_per_key_with_its_count():
    fig = own.count_bars({"longlist/pre_nms_top_k": 59, "shortlist/cap": 7}, "missed objects", title="66 missed")
    ax = fig.axes[0]
    assert [p.get_width() for p in _rectangles(ax)] == [59, 7]
    assert [t.get_text() for t in ax.texts] == ["59", "7"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["longlist/pre_nms_top_k", "shortlist/cap"]
    assert ax.get_xlabel() == "missed objects" and ax.get_title() == "66 missed"
    assert ax.get_xlim()[1] > 59
    plt.close(fig)

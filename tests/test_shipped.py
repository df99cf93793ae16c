"""The shipped model: it loads from data/ and reproduces the AP stated in its card and the README.

These are regression checks: the stored numbers in ``data/weights/shapes_eval.json`` were
measured by pycocotools (``python -m minimask.evaluate``) when the model was trained, and the
tests recompute them with pycocotools on the same weights and data, so a change to the
forward, the paste or the data that moves the AP fails here. The AP itself always comes from
pycocotools' ``COCOeval``, never from these files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from minimask import Config, load_pretrained
from minimask.data import shapes_val
from minimask.evaluate import evaluate, paste_ceiling
from minimask.weights import SHIPPED, read_weights

ROOT = Path(__file__).resolve().parents[1]
CARD = SHIPPED["shapes"].with_name("shapes_eval.json")


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads(CARD.read_text())


@pytest.fixture(scope="module")
def model():
    return load_pretrained("shapes")


def test_shipped_file_is_small_safetensors_with_its_config(model):
    path = SHIPPED["shapes"]
    assert path.suffix == ".safetensors" and path.stat().st_size < 25 * 2**20
    _, cfg, extra = read_weights(path)
    assert cfg == Config.shapes(), "the shipped model is the Config.shapes() preset"
    # trained in at most 45 minutes on 2 CPU cores (the card says how long)
    assert extra["training"]["iterations"] > 0 and extra["training"]["minutes"] <= 45
    assert model.config == cfg and not model.training


@pytest.mark.parametrize("paste", ["torchvision", "subpixel"])
def test_shipped_model_reproduces_the_stated_ap(model, card, paste):
    """Regression check. Oracle: pycocotools COCOeval on the committed val split, against the
    numbers stored in the model card when it was trained (to 0.005), per class too."""
    model.config = model.config.replace(mask_paste=paste)
    report = evaluate(model, shapes_val(), progress=False, per_class=paste == "subpixel")
    for kind in ("bbox", "segm"):
        for stat in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            assert report[kind][stat] == pytest.approx(card[paste][kind][stat], abs=0.005), (paste, kind, stat)
    if paste == "subpixel":
        assert set(report["per_class"]) == set(card["per_class"]) == set(shapes_val().class_names[1:])
        for name, entry in report["per_class"].items():
            for kind in ("bbox", "segm"):
                assert entry[kind]["AP"] == pytest.approx(card["per_class"][name][kind]["AP"], abs=0.005), name


def test_paste_ceilings_match_the_card(card):
    val = shapes_val()
    for paste in ("torchvision", "subpixel"):
        ceiling = paste_ceiling(val, Config.shapes().replace(mask_paste=paste), progress=False)
        assert ceiling["AP"] == pytest.approx(card[paste]["ceiling"]["AP"], abs=0.005), paste


def test_readme_states_the_card_numbers(card):
    """The README's table shows the measured numbers (3 decimals), so it cannot drift from the card."""
    readme = (ROOT / "README.md").read_text()
    for paste in ("torchvision", "subpixel"):
        row = next(line for line in readme.splitlines() if re.match(rf"\|\s*mask AP, {paste} paste", line))
        for stat in ("AP", "AP50", "AP75", "APs", "APm"):
            assert f"{card[paste]['segm'][stat]:.3f}" in row, (paste, stat, row)
    box_row = next(line for line in readme.splitlines() if re.match(r"\|\s*box AP", line))
    for stat in ("AP", "AP50", "AP75", "APs", "APm"):
        assert f"{card['torchvision']['bbox'][stat]:.3f}" in box_row, (stat, box_row)

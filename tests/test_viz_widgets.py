"""The offline sliders of minimask.viz.widgets: self-contained HTML, one container per widget.

Oracle: the HTML itself, parsed with the standard library's ``html.parser`` (element
counts, ids, attributes); the browser check of the built site drags the sliders.
"""

import re
import shutil
import subprocess
from html.parser import HTMLParser

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from minimask.viz.widgets import encode_image, frames_slider, threshold_slider


class Elements(HTMLParser):
    """Every start tag with its attributes, in order."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse(markup: str) -> list[tuple[str, dict]]:
    parser = Elements()
    parser.feed(markup)
    return parser.tags


def small_case():
    image = torch.rand(3, 40, 60)
    boxes = torch.tensor([[2.0, 3.0, 20.0, 30.0], [10.0, 5.0, 50.0, 35.0], [0.0, 0.0, 8.0, 8.0]])
    scores = torch.tensor([0.9, 0.3, 0.02])
    labels = torch.tensor([1, 2, 3])
    return image, boxes, scores, labels


def no_remote_urls(markup: str) -> bool:
    return re.search(r"https?://", markup) is None


def test_threshold_slider_elements():
    """One container with a unique id, one range input, the image first, one rect per box."""
    image, boxes, scores, labels = small_case()
    xs = np.linspace(0, 1, 11)
    widget = threshold_slider(
        image,
        boxes,
        scores,
        labels,
        class_names=["background", "a", "b", "c"],
        threshold=0.05,
        curve=(xs, {"precision": xs, "recall": 1 - xs}),
        gt_boxes=torch.tensor([[1.0, 1.0, 10.0, 10.0]]),
    )
    markup = widget.data
    tags = parse(markup)
    assert tags[0][0] == "div" and tags[0][1]["id"].startswith("mm-thr-")
    assert sum(1 for t, _ in tags if t == "div" and _.get("class") == "mm-widget") == 1
    inputs = [a for t, a in tags if t == "input"]
    assert len(inputs) == 1 and inputs[0]["type"] == "range" and float(inputs[0]["value"]) == 0.05
    # the picture: an <image> with an inline PNG, first child of the image svg
    svg_children = []
    inside = False
    for t, a in tags:
        if t == "svg":
            inside = a.get("class") == "mm-image"
            continue
        if inside:
            svg_children.append((t, a))
    assert svg_children[0][0] == "image" and svg_children[0][1]["href"].startswith("data:image/png;base64,")
    box_rects = [a for t, a in svg_children if t == "rect" and a.get("class") == "mm-box"]
    assert len(box_rects) == 3
    # initial state without JavaScript: only scores > 0.05 visible (strict, as torchvision)
    hidden = sorted(float(a["data-score"]) for a in box_rects if "display:none" in a.get("style", ""))
    assert hidden == [pytest.approx(0.02)]
    # ground truth, the curve marker and one polyline per series
    assert sum(1 for t, a in svg_children if t == "rect" and "stroke-dasharray" in a) == 1
    assert sum(1 for t, _ in tags if t == "polyline") == 2
    assert sum(1 for t, a in tags if t == "line" and a.get("class") == "mm-marker") == 1
    # the script finds its own container and listens to the slider
    assert f"getElementById('{tags[0][1]['id']}')" in markup
    assert "addEventListener('input'" in markup
    assert no_remote_urls(markup)


def test_threshold_slider_ids_unique_and_lengths_checked():
    image, boxes, scores, labels = small_case()
    first = parse(threshold_slider(image, boxes, scores, labels).data)[0][1]["id"]
    second = parse(threshold_slider(image, boxes, scores, labels).data)[0][1]["id"]
    assert first != second
    with pytest.raises(ValueError, match="differ in length"):
        threshold_slider(image, boxes, scores[:2], labels)
    with pytest.raises(ValueError, match="curve"):
        threshold_slider(image, boxes, scores, labels, curve=([0.0, 1.0], {"p": [1.0]}))


def test_frames_slider_elements():
    """The initial frame is a plain <img> with a base64 JPEG; every frame is in the script."""
    figures = []
    for k in range(3):
        fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
        ax.plot([0, 1], [0, k])
        figures.append(fig)
    widget = frames_slider(figures, [0.3, 0.5, 0.7], "NMS IoU", initial=1)
    assert all(not plt.fignum_exists(f.number) for f in figures)  # closed: no second static copy
    markup = widget.data
    tags = parse(markup)
    assert tags[0][0] == "div" and tags[0][1]["id"].startswith("mm-frames-")
    inputs = [a for t, a in tags if t == "input"]
    assert len(inputs) == 1 and (inputs[0]["min"], inputs[0]["max"], inputs[0]["value"]) == ("0", "2", "1")
    images = [a for t, a in tags if t == "img"]
    assert len(images) == 1 and images[0]["src"].startswith("data:image/jpeg;base64,")
    sources = re.findall(r"data:image/jpeg;base64,[A-Za-z0-9+/=]+", markup)
    assert len(set(sources)) == 3  # the three frames, the initial one also in the <img>
    assert images[0]["src"] == sources[0]  # the <img> comes first in the markup
    assert "NMS IoU = 0.5" in markup
    assert no_remote_urls(markup)
    with pytest.raises(ValueError):
        frames_slider([b"x"], [1, 2], "v")


def _png_or_same(source: str) -> bytes:
    import base64

    return base64.b64decode(source.split(",", 1)[1])


def test_frames_slider_accepts_bytes():
    png = encode_image(torch.zeros(3, 4, 4))
    raw = _png_or_same(png)
    markup = frames_slider([raw, raw], ["a", "b"], "step").data
    assert 'src="data:image/png;base64,' in markup


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no headless chromium here")
def test_sliders_change_their_picture_in_chromium(tmp_path):
    """Headless Chromium, page from disk: moving each slider changes its picture."""
    image, boxes, scores, labels = small_case()
    fig_a, ax = plt.subplots(figsize=(2, 1.5), dpi=40)
    ax.plot([0, 1])
    fig_b, ax = plt.subplots(figsize=(2, 1.5), dpi=40)
    ax.plot([1, 0])
    page = (
        "<html><body>"
        + threshold_slider(image, boxes, scores, labels, threshold=0.05).data
        + frames_slider([fig_a, fig_b], [1, 2], "v").data
        + "<script>var res=[];document.querySelectorAll('input[type=range]').forEach(function(inp){"
        "var c=inp.closest('.mm-widget');function state(){return Array.from(c.querySelectorAll('svg *'))"
        ".filter(function(e){return getComputedStyle(e).display!=='none';}).length+'|'+"
        "Array.from(c.querySelectorAll('img')).map(function(e){return e.src;}).join();}"
        "var before=state();inp.value=inp.max;inp.dispatchEvent(new Event('input'));"
        "res.push(before!==state());});document.body.setAttribute('data-changed',res.join());</script>"
        "</body></html>"
    )
    path = tmp_path / "page.html"
    path.write_text(page)
    try:
        dom = subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--virtual-time-budget=2000", "--dump-dom", path.as_uri()],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except subprocess.TimeoutExpired:
        pytest.skip("chromium did not answer in 60 s")
    assert 'data-changed="true,true"' in dom


def test_threshold_slider_without_tags_has_a_legend():
    """tags=False: boxes only (no text per box); the class colours are named under the picture."""
    image, boxes, scores, labels = small_case()
    markup = threshold_slider(image, boxes, scores, labels, class_names=["bg", "a", "b", "c"], tags=False).data
    tags = parse(markup)
    assert not [a for t, a in tags if t == "text" and a.get("class") == "mm-box"]
    assert len([a for t, a in tags if t == "rect" and a.get("class") == "mm-box"]) == 3
    assert sum(1 for t, a in tags if t == "div" and a.get("class") == "mm-legend") == 1

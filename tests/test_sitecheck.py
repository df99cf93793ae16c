"""The site check (tools/sitecheck.py) on hand-written pages: it passes a good page and names
each way a page can be broken. Oracle: the pages are built to be right or wrong on purpose.

Needs Chromium (`make site-check` installs Debian's package); skipped without it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


sitecheck = _load("sitecheck")
lint_chapters = _load("lint_chapters")

needs_chromium = pytest.mark.skipif(
    sitecheck.find_chromium() is None,
    reason="chromium is not installed (`make site-check` installs it: apt-get install chromium)",
)

PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body><article><p>A page of the test site, about as wide as the book's column.</p>
{body}</article></body></html>"""

SLIDER_IMG = """<div class="widget"><img id="pic{n}" src="frame0.png" alt="frame">
<input type="range" id="slider{n}" min="0" max="2" step="1" value="0"></div>"""
SWAP_SCRIPT = """<script>document.getElementById('slider{n}').addEventListener('input',
  e => {{ document.getElementById('pic{n}').src = 'frame' + e.target.value + '.png'; }});</script>"""
SLIDER_SVG = """<div class="widget">
<svg width="200" height="120" viewBox="0 0 200 120">
  <rect width="200" height="120" fill="#eee"/>
  <rect class="box" data-score="0.2" x="10" y="10" width="50" height="40" fill="none" stroke="#0072B2" stroke-width="3"/>
  <rect class="box" data-score="0.6" x="80" y="30" width="60" height="60" fill="none" stroke="#D55E00" stroke-width="3"/>
  <rect class="box" data-score="0.9" x="120" y="5" width="70" height="50" fill="none" stroke="#009E73" stroke-width="3"/>
</svg>
<input type="range" id="thresh" min="0" max="1" step="0.05" value="0.1"></div>
<script>document.getElementById('thresh').addEventListener('input', e => {
  for (const b of document.querySelectorAll('.box'))
    b.style.display = Number(b.dataset.score) >= Number(e.target.value) ? '' : 'none'; });</script>"""

# A hand-written Markdown table as the book renders it: code names in the cells
TABLE = """<table><tr><th>step</th><th>torchvision</th></tr>
<tr><td>cap</td><td><code>RoIHeads.postprocess_detections</code>, <code>keep[:100]</code></td></tr></table>"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("site")
    rng = np.random.default_rng(0)
    for k in range(3):  # three different, non-blank frames
        pixels = np.full((120, 200, 3), 255, np.uint8)
        pixels[20 + 20 * k : 60 + 20 * k, 30:170] = rng.integers(0, 255, 3)
        Image.fromarray(pixels).save(root / f"frame{k}.png")
    Image.fromarray(np.full((120, 200, 3), 255, np.uint8)).save(root / "white.png")
    Image.fromarray(np.zeros((100, 1400, 3), np.uint8) + rng.integers(0, 255, (1, 1400, 3), dtype=np.uint8)).save(
        root / "wide.png"
    )
    pages = {
        "good.html": SLIDER_IMG.format(n=1)
        + SWAP_SCRIPT.format(n=1)
        + SLIDER_SVG
        + '<p><a href="other.html#there">a link</a> <a href="#here" id="here">an anchor</a></p>'
        + "<figure><img src='frame1.png'><figcaption>A figure.</figcaption></figure>"
        + TABLE
        + '<script src="table_breaks.js"></script>',
        "other.html": '<h2 id="there">There</h2><pre>print("fits")</pre>',
        "broken_slider.html": SLIDER_IMG.format(n=2),
        "text_figure.html": "<figure><pre>&lt;Figure size 1100x440 with 1 Axes&gt;</pre><figcaption>x</figcaption></figure>",
        "text_output.html": '<div class="cell_output"><pre>&lt;Figure size 640x480 with 1 Axes&gt;</pre></div>',
        "blank.html": "<figure><img src='white.png'><figcaption>A blank figure.</figcaption></figure>",
        "dead_link.html": '<p><a href="missing.html">gone</a> <a href="other.html#nowhere">no anchor</a></p>',
        "network.html": '<img src="https://example.com/figure.png"><script src="http://example.com/x.js"></script>',
        "console.html": "<script>console.error('something broke');</script>",
        "theme_error.html": "<script>const THEBE_JS_URL = 1;</script><script>const THEBE_JS_URL = 2;</script>",
        "wide.html": "<pre>" + "x = 1  # " + "a" * 150 + "</pre>",
        "shrunk.html": "<figure><img src='wide.png' style='max-width:100%'><figcaption>Too wide.</figcaption></figure>",
        "missing_image.html": "<figure><img src='nothing.png'><figcaption>x</figcaption></figure>",
        "unmarked_table.html": TABLE,  # the book's script is not on this page
    }
    (root / "table_breaks.js").write_text((ROOT / "_static" / "table_breaks.js").read_text())
    style = "<style>article { width: 680px; } pre { overflow-x: auto; }</style>"
    for name, body in pages.items():
        (root / name).write_text(PAGE.format(title=name, body=style + body))
    return root


@pytest.fixture(scope="module")
def results(site) -> dict[str, list[str]]:
    found = sitecheck.check_site(site, shots=site / "shots", log=lambda _: None)
    return {r.page: r.problems for r in found}


def _one(problems: list[str], words: str) -> None:
    assert any(words in p for p in problems), problems


@needs_chromium
def test_good_page_passes(results, site):
    """Both working sliders (an <img> swap and SVG boxes hidden by score), links, a figure."""
    assert results["good.html"] == []
    assert results["other.html"] == []
    assert (site / "shots" / "good.png").stat().st_size > 1000


@needs_chromium
def test_slider_that_changes_nothing_fails(results):
    problems = results["broken_slider.html"]
    assert len(problems) == 1
    _one(problems, "but its picture did not change")


@needs_chromium
@pytest.mark.parametrize(
    "page, words",
    [
        ("text_figure.html", "came out as text"),
        ("text_figure.html", "holds no picture"),
        ("text_output.html", "came out as text"),
        ("blank.html", "blank image"),
        ("dead_link.html", "link to a missing page: missing.html"),
        ("dead_link.html", "link to a missing anchor: other.html#nowhere"),
        ("network.html", "asks the network for https://example.com/figure.png"),
        ("network.html", "asks the network for http://example.com/x.js"),
        ("console.html", "console error: something broke"),
        ("wide.html", "wider than the column"),
        ("shrunk.html", "its text shrinks"),
        ("missing_image.html", "image does not load"),
        ("unmarked_table.html", "code names in tables can break between any two letters"),
    ],
)
def test_each_broken_page_is_named(results, page, words):
    _one(results[page], words)


@needs_chromium
def test_only_the_theme_error_is_ignored(results):
    assert results["theme_error.html"] == []


def test_lint_finds_long_lines_in_every_code_cell(tmp_path):
    """Hidden cells too (JupyterLab shows their code); not the options block, not plain code blocks."""
    chapter = tmp_path / "c.md"
    long = "x = " + "1 + " * 25 + "1"
    chapter.write_text(
        f"# T\n\n```{{code-cell}} ipython3\n{long}\n```\n\n"
        f"```{{code-cell}} ipython3\n:tags: [remove-cell]\n{long}\n```\n\n"
        f"```{{code-cell}} ipython3\n---\ntags: [hide-input]\n---\nshort = 1\n{long}\n```\n\n"
        f"```python\n{long}\n```\n"
    )
    problems = lint_chapters.long_lines(chapter)
    assert [p.split(":")[1] for p in problems] == ["4", "9", "17"], problems


def test_lint_finds_long_cells_shown_and_hidden(tmp_path):
    chapter = tmp_path / "c.md"
    shown, hidden = lint_chapters.SHOWN_LINES, lint_chapters.HIDDEN_LINES
    cell = "```{{code-cell}} ipython3\n{options}{body}\n```\n\n"
    lines = lambda n: "\n".join(f"x{i} = {i}" for i in range(n))  # noqa: E731
    chapter.write_text(
        "# T\n\n"
        + cell.format(options="", body=lines(shown))  # at the limit: fine
        + cell.format(options="", body=lines(shown + 1))  # one over
        + cell.format(options=":tags: [remove-input]\n", body=lines(hidden))  # hidden, at its limit
        + cell.format(options="---\ntags: [remove-input]\n---\n", body=lines(hidden + 1))
    )
    problems = lint_chapters.long_cells(chapter)
    assert len(problems) == 2, problems
    assert f"shown code cell of {shown + 1} lines" in problems[0]
    assert f"hidden code cell of {hidden + 1} lines" in problems[1]


@pytest.mark.slow
def test_kernel_figures_are_pictures_whatever_mplbackend():
    """In a Jupyter kernel started with MPLBACKEND=Agg (CI images set it), importing viz still
    makes a Figure display as a PNG: otherwise the book shows '<Figure size ...>'."""
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "MPLBACKEND": "Agg"}
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        code = "from minimask import viz\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots()\ndisplay(fig)"
        sent = kc.execute(code)
        data = {}
        while True:
            msg = kc.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") != sent:
                continue
            if msg["msg_type"] == "display_data":
                data.update(msg["content"]["data"])
            if msg["msg_type"] == "error":
                pytest.fail("\n".join(msg["content"]["traceback"]))
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        assert "image/png" in data, data.keys()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@needs_chromium
def test_a_picture_that_moved_is_found_again_not_called_blank(site):
    """The blank check's later captures re-locate the picture (scrolled into the window): given a
    stale box over white space below the column, a picture far down the page is still seen."""
    page = site / "moved.html"
    page.write_text(PAGE.format(title="moved", body="<div style='height:2500px'></div><img src='frame1.png'>"))
    browser = sitecheck.Browser(sitecheck.find_chromium(), 1280, 900)
    try:
        tab = sitecheck.Tab(browser)
        assert tab.navigate(page.resolve().as_uri()) is None
        stale = {"x": 900.0, "y": 100.0, "width": 200.0, "height": 120.0}  # white: nothing there
        assert sitecheck._looks_blank(tab, stale, attempts=2)  # without re-locating: blank
        assert not sitecheck._looks_blank(tab, stale, attempts=2, locate=sitecheck.LOCATE_IMAGE % 0)
    finally:
        browser.close()

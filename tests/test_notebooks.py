"""The chapters as notebooks: what a reader gets from JupyterLab's *Run All* (tools/notebooks.py).

Each chapter is read by jupytext and executed by nbclient in ``chapters/``, as the book and
``make lab`` do. Every cell that the book shows as a figure (``mystnb.figure`` metadata) must
show a picture in the notebook, every slider its HTML, no text may still hold a ``{glue}`` role
(its numbers are ``{eval}`` roles, which jupyterlab-myst renders), and no cell may fail. The run
time is not asserted here (a shared test machine makes a clock a coin toss): the book build
measures each chapter and ``make site-check`` holds it to 60 s.

Also: a chapter saved unchanged from the lab is byte-identical (the chapters are stored in the
form jupytext writes under ``chapters/jupytext.toml``), and notebooks made from the chapters are
ignored by git and by the book.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from notebooks import CHAPTERS, run_chapter  # noqa: E402

NAMES = sorted(p.stem for p in CHAPTERS.glob("*.md"))


@pytest.mark.parametrize("chapter", NAMES)
def test_chapter_runs_as_a_notebook_with_every_figure(chapter):
    result = run_chapter(chapter)
    assert not result.problems(), f"chapters/{chapter}.md as a notebook: " + "; ".join(result.problems())
    assert result.figures_wanted > 0, f"chapters/{chapter}.md has no captioned figure cell"
    assert result.images >= result.figures_wanted


def test_a_reader_can_change_the_image_and_a_threshold():
    """Chapter 6 with another featured image and a class-NMS threshold off the slider's list
    (it used to fail with "0.45 is not in list"): it runs, and the slider and captions follow."""
    text = (CHAPTERS / "shortlist.md").read_text(encoding="utf-8")
    assert text.count("featured_index = 0") == 1 and text.count("cfg = model.config\n") == 1
    text = text.replace("featured_index = 0", "featured_index = 3")
    text = text.replace(
        "cfg = model.config\n", "model.config = model.config.replace(box_nms_thresh=0.45)\ncfg = model.config\n"
    )
    result = run_chapter("shortlist", text=text)
    assert not result.problems(), "; ".join(result.problems())


@pytest.mark.parametrize("chapter", NAMES)
def test_saving_an_unchanged_chapter_rewrites_the_same_bytes(chapter):
    import jupytext
    from jupytext.config import load_jupytext_config

    path = CHAPTERS / f"{chapter}.md"
    config = load_jupytext_config(str(path))
    assert config is not None, "chapters/jupytext.toml is not found from the chapters"
    text = path.read_text(encoding="utf-8")
    saved = jupytext.writes(jupytext.reads(text, fmt="md:myst"), fmt="md:myst", config=config)
    assert saved == text, f"chapters/{chapter}.md is not in jupytext's form: run tools/canonical_chapters.py"


def test_notebooks_made_from_chapters_are_ignored_by_git_and_the_book():
    probe = "chapters/data.ipynb"
    ignored = subprocess.run(["git", "check-ignore", "-q", probe], cwd=ROOT)
    assert ignored.returncode == 0, f"{probe} is not ignored by git"
    config = (ROOT / "_config.yml").read_text(encoding="utf-8")
    assert '"**/*.ipynb"' in config, "_config.yml's exclude_patterns must exclude notebooks"


def test_a_figure_cell_that_shows_its_picture_twice_is_a_problem():
    """A cell that returns a figure still open in pyplot shows it twice (the inline backend, then
    the return value); the book would then label two figures with one name. ``viz.output``
    closes it first."""
    cell = "```{code-cell} ipython3\n---\nmystnb:\n  figure:\n    name: fig-x\n    caption: x\n---\n"
    header = "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
    header += "kernelspec:\n  name: python3\n  display_name: Python 3\n  language: python\n---\n\n# x\n\n"
    body = "import matplotlib.pyplot as plt\nfrom minimask import viz\n\nfig, ax = plt.subplots()\nax.plot([0, 1])\n"
    twice = run_chapter("introduction", text=header + cell + body + "fig\n```\n")
    once = run_chapter("introduction", text=header + cell + body + "viz.output(fig)\n```\n")
    assert twice.doubled == [1] and any("more than one picture" in p for p in twice.problems())
    assert once.doubled == [] and once.figures == 1 and not once.problems()

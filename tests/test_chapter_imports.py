"""Each chapter imports only the modules of its own and earlier chapters (DESIGN.md).

A reader goes through the book in order: chapter 4 may show ``longlist`` and use
``objectness`` (chapter 3), never ``classification`` (chapter 5). Shared helpers are allowed
everywhere: ``config``, ``boxes``, ``fates``, ``data`` (the data set), ``coco_eval`` (the
bridge to pycocotools: COCO results, IoU, matching, AP), ``viz`` and its submodules, and
the top-level ``Config`` and ``load_pretrained`` (how a reader gets the model). ``compat``
(chapter 9's bridge to torchvision, explained in chapter 11) is allowed in the chapter's
closing section (the code cells after its last heading), the parity check against torchvision.

The test parses the ``import``/``from`` statements of every code cell of ``chapters/*.md``
with ``ast``; the oracle is the chapter map below (DESIGN.md "Chapters and modules").
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CHAPTERS_DIR = Path(__file__).resolve().parents[1] / "chapters"

# chapter file -> its number in the book
CHAPTERS = {
    "introduction": 0,
    "data": 1,
    "features": 2,
    "objectness": 3,
    "longlist": 4,
    "classification": 5,
    "shortlist": 6,
    "segmentation": 7,
    "scoring": 8,
    "training": 9,
    "trace": 10,
    "reference": 11,
    "own_model": 12,
}

# minimask module -> the chapter that explains it
MODULE_CHAPTER = {
    "shapes": 1,
    "coco": 1,
    "transform": 2,
    "backbone": 2,
    "anchors": 3,
    "objectness": 3,
    "targets": 3,
    "longlist": 4,
    "pooling": 5,
    "classification": 5,
    "shortlist": 6,
    "segmentation": 7,
    "paste": 7,
    "scoring": 8,
    "model": 9,
    "train": 9,
    "evaluate": 9,
    "losses": 9,
    "weights": 9,
    "predict": 9,
    "compat": 9,
    "trace": 10,
    "explain": 10,
}

# allowed in every chapter: shared helpers, no decision of their own
SHARED = {"config", "boxes", "fates", "data", "coco_eval", "viz"}
# names imported from the top-level package that are not modules
TOP_LEVEL_NAMES = {"Config": "config", "load_pretrained": "weights", "MaskRCNN": "model"}
ALWAYS_NAMES = {"Config", "load_pretrained"}
# the last code cell may check the chapter against torchvision through compat
PARITY_MODULES = {"compat"}
# known exceptions, each with its reason: (chapter, module)
EXCEPTIONS = {
    # the model's masks re-pasted under each rule as COCO results (evaluate.run_results)
    ("segmentation", "evaluate"),
}


def code_cells(text: str) -> list[str]:
    """The source of each code cell of a MyST notebook, as jupytext reads it (options removed)."""
    return [source for source, _ in _cells(text)]


def _cells(text: str) -> list[tuple[str, bool]]:
    """(source, in the closing section) of each code cell: the closing section is what follows
    the last markdown heading."""
    import jupytext

    cells = jupytext.reads(text, fmt="md:myst").cells
    headings = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and any(
        line.startswith("#") for line in c.source.splitlines())]  # fmt: skip
    last = headings[-1] if headings else -1
    return [(c.source, i > last) for i, c in enumerate(cells) if c.cell_type == "code"]


def minimask_imports(source: str) -> list[tuple[str, int]]:
    """(module or top-level name, line) for each minimask import of a cell.

    ``from minimask.x.y import ...`` and ``import minimask.x`` give ``x``; ``from minimask
    import a, b`` gives ``a`` and ``b`` (modules or names such as ``Config``).
    """
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    tree = ast.parse("\n".join(lines))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "minimask":
                continue
            if len(parts) > 1:
                found.append((parts[1], node.lineno))
            else:
                found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "minimask" and len(parts) > 1:
                    found.append((parts[1], node.lineno))
    return found


def violations(chapter: str, text: str) -> list[str]:
    """Every import of ``chapter``'s text that breaks the rule, as a message."""
    number = CHAPTERS[chapter]
    out = []
    for index, (source, closing) in enumerate(_cells(text)):
        for name, line in minimask_imports(source):
            if name in ALWAYS_NAMES or name in SHARED:
                continue
            module = TOP_LEVEL_NAMES.get(name, name)
            if module not in MODULE_CHAPTER:
                out.append(f"cell {index}, line {line}: minimask.{name} is not in the chapter map")
                continue
            if module in PARITY_MODULES and closing:
                continue
            if (chapter, module) in EXCEPTIONS:
                continue
            if MODULE_CHAPTER[module] > number:
                out.append(
                    f"cell {index}, line {line}: imports minimask.{module} of chapter "
                    f"{MODULE_CHAPTER[module]} (this is chapter {number})"
                )
    return out


def test_every_chapter_is_in_the_map():
    names = sorted(p.stem for p in CHAPTERS_DIR.glob("*.md"))
    assert names, f"no chapters in {CHAPTERS_DIR}"
    unknown = [n for n in names if n not in CHAPTERS]
    assert not unknown, f"chapters missing from CHAPTERS (give them a number): {unknown}"


@pytest.mark.parametrize("chapter", sorted(p.stem for p in CHAPTERS_DIR.glob("*.md")))
def test_chapter_imports_only_earlier_modules(chapter):
    if chapter not in CHAPTERS:
        pytest.skip("not in the chapter map (test_every_chapter_is_in_the_map fails)")
    found = violations(chapter, (CHAPTERS_DIR / f"{chapter}.md").read_text(encoding="utf-8"))
    assert not found, f"chapters/{chapter}.md:\n" + "\n".join(found)


def test_the_rule_catches_a_later_module():
    """The checker itself: a later chapter's module is refused, earlier and shared ones pass."""
    later = "```{code-cell} ipython3\nfrom minimask.classification import classify\n```\n"
    earlier = (
        "```{code-cell} ipython3\n:tags: [remove-cell]\nfrom minimask import Config, data, viz\n"
        "from minimask.objectness import score_anchors\nimport minimask.boxes\n```\n"
    )
    parity = "```{code-cell} ipython3\nfrom minimask import compat\n```\n"
    parity_early = "# T\n\n" + parity + "\n## Then\n\n" + earlier
    # the closing section (after the last heading) may span cells with prose between them
    parity_last = "# T\n\n" + earlier + "\n## Check\n\n" + parity + "\nProse.\n\n" + parity
    top_level_model = "```{code-cell} ipython3\nfrom minimask import MaskRCNN\n```\n"
    unknown = "```{code-cell} ipython3\nfrom minimask.nowhere import x\n```\n"
    assert violations("longlist", later)
    assert not violations("longlist", earlier)
    assert violations("longlist", parity_early)
    assert not violations("longlist", parity_last)
    assert violations("longlist", top_level_model)
    assert not violations("training", top_level_model)
    assert violations("longlist", unknown)

"""Store chapters in the form JupyterLab (jupytext) saves them, so that a save changes nothing.

``python tools/canonical_chapters.py [CHAPTER ...]`` rewrites each chapter (default: all) as
jupytext writes it under ``chapters/jupytext.toml``; a figure caption (``mystnb.figure.caption``)
is first joined into one line, so that its YAML stays a plain wrapped string.
``tests/test_notebooks.py`` checks that every chapter is in this form.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
from jupytext.config import load_jupytext_config

CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"


def canonical(path: Path) -> str:
    nb = jupytext.reads(path.read_text(encoding="utf-8"), fmt="md:myst")
    for cell in nb.cells:
        figure = cell.metadata.get("mystnb", {}).get("figure")
        if figure and isinstance(figure.get("caption"), str):
            figure["caption"] = " ".join(figure["caption"].split())
    return jupytext.writes(nb, fmt="md:myst", config=load_jupytext_config(str(path)))


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or sorted(p.stem for p in CHAPTERS.glob("*.md"))
    for name in names:
        path = CHAPTERS / f"{name}.md"
        if not path.is_file():
            print(f"canonical_chapters: no chapter {path}", file=sys.stderr)
            return 2
        text = canonical(path)
        if text != path.read_text(encoding="utf-8"):
            path.write_text(text, encoding="utf-8")
            print(f"rewrote {path.relative_to(CHAPTERS.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

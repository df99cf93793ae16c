"""Run chapters as a reader of the notebooks would: jupytext -> nbclient, in ``chapters/``.

``python tools/notebooks.py [CHAPTER ...] [--max-seconds 60]`` runs each chapter (default: all)
as a notebook and prints, per chapter: the seconds it took, its pictures (``image/png`` outputs)
and sliders (``text/html`` outputs of a ``frames_slider`` cell) against what its source asks for
(cells with ``mystnb.figure`` metadata, cells that call ``frames_slider``), and any ``{glue``
role left in its text. Exit status 1 if a chapter fails any of these, or runs over
``--max-seconds``. ``tests/test_notebooks.py`` runs the same check, without the clock.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"


@dataclass
class NotebookRun:
    chapter: str
    seconds: float = 0.0
    error: str = ""
    figures_wanted: int = 0  # cells with mystnb.figure metadata
    figures: int = 0  # of those, the cells with an image/png output
    doubled: list[int] = field(default_factory=list)  # figure cells with more than one picture
    sliders_wanted: int = 0  # cells calling frames_slider
    sliders: int = 0  # of those, the cells with a text/html output
    images: int = 0  # image/png outputs in the whole notebook
    glue_left: list[str] = field(default_factory=list)  # text lines that still hold a {glue role

    def problems(self, max_seconds: float | None = None) -> list[str]:
        out = []
        if self.error:
            out.append(f"a cell failed: {self.error}")
        if self.figures < self.figures_wanted:
            out.append(f"{self.figures} of {self.figures_wanted} figure cells show a picture")
        if self.doubled:
            out.append(
                f"figure cell(s) {self.doubled} show more than one picture (end the cell with "
                "viz.output(fig): the inline backend shows an open figure again, and the book then "
                "labels two figures with one name)"
            )
        if self.sliders < self.sliders_wanted:
            out.append(f"{self.sliders} of {self.sliders_wanted} slider cells show their slider")
        if self.glue_left:
            out.append(f"{len(self.glue_left)} text lines still use {{glue}}: {self.glue_left[0]!r}")
        if max_seconds is not None and self.seconds > max_seconds:
            out.append(f"ran {self.seconds:.1f} s, over {max_seconds:.0f} s")
        return out


def _has(cell, mime: str) -> bool:
    return any(mime in o.get("data", {}) for o in cell.get("outputs", []))


def run_chapter(chapter: str, timeout: int = 240, text: str | None = None) -> NotebookRun:
    """Execute ``chapters/<chapter>.md`` (or ``text``, a changed copy of it) as a notebook (cwd
    ``chapters/``) and count its outputs."""
    import jupytext
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = CHAPTERS / f"{chapter}.md"
    nb = jupytext.reads(text if text is not None else path.read_text(encoding="utf-8"), fmt="md:myst")
    result = NotebookRun(chapter)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            result.glue_left += [line for line in cell.source.splitlines() if "{glue" in line]
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(CHAPTERS)}})
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:
        result.error = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    result.seconds = time.perf_counter() - start
    for number, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        pictures = sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
        result.images += pictures
        if "figure" in cell.metadata.get("mystnb", {}):
            result.figures_wanted += 1
            result.figures += _has(cell, "image/png")
            if pictures > 1:
                result.doubled.append(number)
        if "frames_slider(" in cell.source:
            result.sliders_wanted += 1
            result.sliders += _has(cell, "text/html")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/notebooks.py", description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="chapter names (default: every chapters/*.md)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="limit per chapter (default 60)")
    args = parser.parse_args(argv)
    names = args.chapters or sorted(p.stem for p in CHAPTERS.glob("*.md"))
    missing = [n for n in names if not (CHAPTERS / f"{n}.md").is_file()]
    if missing:
        print(f"notebooks: no chapter {', '.join(missing)} in {CHAPTERS}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        r = run_chapter(name)
        problems = r.problems(args.max_seconds)
        failed += bool(problems)
        print(
            f"{'FAIL' if problems else 'ok  '}  {name:16s} {r.seconds:5.1f} s  figures {r.figures}/{r.figures_wanted}"
            f"  sliders {r.sliders}/{r.sliders_wanted}  pictures {r.images}"
        )
        for p in problems:
            print(f"      {p}")
        sys.stdout.flush()
    print(f"notebooks: {len(names)} chapters, {failed} with problems")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

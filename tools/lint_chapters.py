"""Lint the chapters: code a reader sees fits the column and teaches; hidden code stays short.

The book's column shows about 80 characters of code at 1280 px (the site check measures it), so a
longer line makes the reader scroll sideways, in the book and in JupyterLab, where a hidden cell's
code shows too. This checks every line of every ```{code-cell}``` of ``chapters/*.md`` (the
cell's options block is not code and is not shown). And cell length: a shown cell teaches one thing in at most ``SHOWN_LINES`` lines; a
hidden one (it still runs in JupyterLab, where a reader meets it) at most ``HIDDEN_LINES``:
longer plumbing belongs in the library. Usage:
``python tools/lint_chapters.py [--max 80] [files...]``; exits 1 on any problem.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

MAX_COLUMNS = 80
SHOWN_LINES = 15
HIDDEN_LINES = 20
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\{code-cell\}")
HIDDEN_TAGS = {"remove-cell", "remove-input"}


def code_cells(text: str) -> Iterator[tuple[int, list[str], set[str]]]:
    """(line number of the first code line, code lines, tags) of each code cell in a MyST file."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence = match.group("fence")
        body_start = i + 1
        j = body_start
        while j < len(lines) and not lines[j].startswith(fence):
            j += 1
        body = lines[body_start:j]
        tags: set[str] = set()
        skip = 0
        if body and body[0].strip() == "---":  # a YAML block of options
            end = next((k for k in range(1, len(body)) if body[k].strip() == "---"), 0)
            options = "\n".join(body[1:end])
            skip = end + 1
        else:  # :key: value lines
            while skip < len(body) and re.match(r"^:\w[\w-]*:", body[skip]):
                skip += 1
            options = "\n".join(body[:skip])
        tag_text = re.search(r"tags:\s*\[([^\]]*)\]", options)
        if tag_text:
            tags = {t.strip().strip("\"'") for t in tag_text.group(1).split(",") if t.strip()}
        else:  # tags as a YAML list, one per line
            tags = set(re.findall(r"^\s*-\s*([\w-]+)\s*$", options, re.M))
        yield body_start + skip + 1, body[skip:], tags
        i = j + 1


def long_lines(path: Path, limit: int = MAX_COLUMNS) -> list[str]:
    problems = []
    for first, code, _ in code_cells(path.read_text(encoding="utf-8")):
        for offset, line in enumerate(code):
            if len(line) > limit:
                problems.append(f"{path}:{first + offset}: {len(line)} > {limit} characters in a code cell")
    return problems


def long_cells(path: Path, shown: int = SHOWN_LINES, hidden: int = HIDDEN_LINES) -> list[str]:
    """A problem for each code cell longer than its limit (lines of code, options excluded)."""
    problems = []
    for first, code, tags in code_cells(path.read_text(encoding="utf-8")):
        limit, kind = (hidden, "hidden") if tags & HIDDEN_TAGS else (shown, "shown")
        code = "\n".join(code).strip("\n").splitlines()  # the blank line after the options is no code
        if len(code) > limit:
            problems.append(f"{path}:{first}: a {kind} code cell of {len(code)} lines (at most {limit})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--max", type=int, default=MAX_COLUMNS)
    args = parser.parse_args(argv)
    files = args.files or sorted(Path("chapters").glob("*.md"))
    problems = [p for f in files for p in long_lines(f, args.max)]
    cells = [p for f in files for p in long_cells(f)]
    for problem in problems + cells:
        print(problem)
    if problems:
        print(f"{len(problems)} code-cell lines longer than {args.max} characters (the page's column)")
    if cells:
        print(f"{len(cells)} code cells longer than {SHOWN_LINES} lines (shown) or {HIDDEN_LINES} (hidden)")
    return 1 if problems or cells else 0


if __name__ == "__main__":
    sys.exit(main())

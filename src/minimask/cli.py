"""The command lines' one rule for mistakes (``predict``, ``evaluate``, ``data``, ``train``).

A user's mistake (an option, a file, a field in a file) exits with status 2 and one line on
stderr, ``error: ...``, naming the culprit and what is wrong, with a close match for a mistyped
name; status 1 (a traceback) is kept for bugs. Options and output folders are checked before
any long work starts. Every option's help shows its default.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "Parser",
    "UserError",
    "check_device",
    "check_input_file",
    "check_weights",
    "did_you_mean",
    "fail",
    "integer",
    "number",
    "user_errors",
    "warn",
    "writable_dir",
]


class UserError(Exception):
    """A mistake in a command's input: exit status 2 with one line (``user_errors``)."""


# The library names the file or field in these (coco.read_annotations, weights.read_weights, ...);
# OSError: a file or folder that cannot be read or written (missing, not writable, disk full).
USER_ERRORS = (UserError, OSError, ValueError)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``choices`` (difflib), or ""."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def fail(message: object, status: int = 2) -> None:
    """Print ``error: message`` as one line and exit with ``status``."""
    line = " ".join(str(message).split())
    print(f"error: {line}", file=sys.stderr, flush=True)
    raise SystemExit(status)


def warn(message: object) -> None:
    """Print ``warning: message`` as one line on stderr."""
    print("warning: " + " ".join(str(message).split()), file=sys.stderr, flush=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the user's mistakes raised inside into ``fail`` (status 2); Ctrl-C into status 130."""
    try:
        yield
    except USER_ERRORS as err:
        fail(err)
    except KeyboardInterrupt:
        fail("interrupted", 130)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` unless the help already says it, or there is nothing to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.required or action.default is None or action.default is False:
            return text
        return text if action.default == argparse.SUPPRESS else f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one ``error:`` line (status 2) with a close match."""

    def __init__(self, prog: str, description: str) -> None:
        super().__init__(prog=prog, description=description, formatter_class=_Formatter, allow_abbrev=False,
                         epilog="Exit status: 0 done, 2 a mistake in the input (one line names it), 1 a bug.")  # fmt: skip

    def error(self, message: str) -> None:  # type: ignore[override]
        found = re.match(r"unrecognized arguments: (.*)", message)
        if found:
            options = [s for a in self._actions for s in a.option_strings]
            unknown = [w.split("=")[0] for w in found.group(1).split() if w.startswith("-")]
            if unknown:
                message = "unknown option " + ", ".join(w + did_you_mean(w, options) for w in unknown)
        fail(f"{message} (see {self.prog} --help)")


def integer(low: int) -> type:
    """An argparse ``type``: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    return parse  # type: ignore[return-value]


def number(low: float, high: float = math.inf, low_open: bool = False) -> type:
    """An argparse ``type``: a finite number in [low, high] (or (low, high] with ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        too_low = value <= low if low_open else value < low
        if not math.isfinite(value) or too_low or value > high:
            span = f"> {low:g}" if low_open else f">= {low:g}"
            span = f"in [{low:g}, {high:g}]" if math.isfinite(high) and not low_open else span
            raise argparse.ArgumentTypeError(f"must be a finite number {span}, got {text}")
        return value

    return parse  # type: ignore[return-value]


def check_device(device: str, option: str = "--device") -> str:
    """``device`` if torch can use it here; else a ``UserError`` naming the option."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"{option} {device!r} is not a device (cpu, cuda, cuda:1, mps ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{option} {device}: no CUDA device is available here (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"{option} {device}: there are {torch.cuda.device_count()} CUDA devices (0-based)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{option} {device}: MPS is not available here (use --device cpu)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{option} {device}: minimask runs on cpu, cuda or mps")
    return device


def writable_dir(path: Path, option: str) -> Path:
    """Create ``path`` (and its parents) if missing; a ``UserError`` naming ``option`` if it cannot hold files."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{option} {path}: cannot create the folder ({err.strerror or err})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: the folder is not writable")
    return path


def check_weights(value: str, option: str = "--weights") -> str:
    """``value`` if it is a shipped model's name or an existing file; else a ``UserError``."""
    from minimask.weights import SHIPPED

    if value in SHIPPED or Path(value).is_file():
        return value
    what = "is a folder" if Path(value).is_dir() else "no such file"
    raise UserError(f"{option} {value}: {what}; give {' or '.join(SHIPPED)} (shipped) or a .safetensors file "
                    "written by python -m minimask.train" + did_you_mean(value, SHIPPED))  # fmt: skip


def check_input_file(value: str, option: str) -> Path:
    """``Path(value)`` if it is an existing file; else a ``UserError`` naming ``option``."""
    path = Path(value)
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder, not a file")
    if not path.is_file():
        raise UserError(f"{option} {path}: no such file")
    return path

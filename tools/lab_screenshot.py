"""A chapter in JupyterLab after *Run All*, as a reader of ``make lab`` sees it: a screenshot.

``python tools/lab_screenshot.py [CHAPTER] [--out DIR]`` starts JupyterLab on ``chapters/``
(set up as ``make lab`` does: chapters open as Jupytext notebooks; a free local port, no token),
opens the chapter in headless Chromium (driven as ``tools/sitecheck.py`` drives it, allowed to
reach this machine only), runs every cell through the lab's own *Run All* command, waits for
the kernel to finish, and writes ``DIR/lab_<chapter>.png`` (default ``_build/lab``) with a line
counting the pictures, sliders and rendered numbers in the lab's page. Exit status 1 if the
notebook shows no picture, or a number role is left unrendered.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from sitecheck import Browser, Tab, find_chromium  # noqa: E402

OVERRIDES = {
    "@jupyterlab/docmanager-extension:plugin": {
        "defaultViewers": {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}
    },
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false"},  # no news pop-up over the page
    # every cell rendered (the default draws only the cells in view, so a page capture is blank below)
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
}

COUNT = """(() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const q = (s) => panel.querySelectorAll(s).length;
  return {cells: q('.jp-Cell'), pictures: q('.jp-OutputArea-output img'),
          sliders: q('.jp-OutputArea-output input[type=range]'),
          raw_roles: (panel.innerText.match(/\\{(eval|glue)[^}]*\\}`/g) || []).length,
          busy: document.querySelector('.jp-Notebook-ExecutionIndicator[data-status="busy"]') !== null
                || panel.querySelectorAll('.jp-InputPrompt').length === 0
                || Array.from(panel.querySelectorAll('.jp-InputPrompt')).some(p => p.innerText.includes('*'))};
})()"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/lab_screenshot.py", description=__doc__.splitlines()[0])
    parser.add_argument("chapter", nargs="?", default="shortlist", help="chapter name (default: shortlist)")
    parser.add_argument("--out", default=str(ROOT / "_build" / "lab"), help="folder for the PNG")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for Run All")
    parser.add_argument(
        "--save",
        action="store_true",
        help="then save the notebook from the lab and fail if the chapter's file changed (restored if so)",
    )
    args = parser.parse_args(argv)
    if not (ROOT / "chapters" / f"{args.chapter}.md").is_file():
        print(f"lab_screenshot: no chapter chapters/{args.chapter}.md", file=sys.stderr)
        return 2
    chromium = find_chromium()
    if chromium is None:
        print("lab_screenshot: Chromium is not installed (make site-check installs it)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="lab-screenshot-"))
    settings = Path(sys.prefix) / "share" / "jupyter" / "lab" / "settings"  # as make lab writes it
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "overrides.json").write_text(json.dumps(OVERRIDES))
    port = _free_port()
    env = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(home / "user-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),  # no tabs left open by an earlier lab
        "JUPYTER_RUNTIME_DIR": str(home),
    }
    lab = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.token=",
         "--ServerApp.password=", "--LabApp.expose_app_in_browser=True", f"--notebook-dir={ROOT / 'chapters'}",
         "--allow-root"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    browser = None
    try:
        base = f"http://127.0.0.1:{port}"
        if not _wait_http(f"{base}/api", 60):
            print("lab_screenshot: JupyterLab did not start within 60 s", file=sys.stderr)
            return 1
        browser = Browser(chromium, 1280, 2400, loopback=True)
        tab = Tab(browser, offline=False)
        why = tab.navigate(f"{base}/lab/tree/{args.chapter}.md", timeout=90)
        if why:
            print(f"lab_screenshot: the lab did not load: {why}", file=sys.stderr)
            return 1
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not tab.evaluate(
            "!!(window.jupyterapp && document.querySelector('.jp-NotebookPanel .jp-Cell'))"
        ):
            time.sleep(1)
        time.sleep(5)  # the kernel starts
        tab.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells'); true")
        start = time.monotonic()
        counts = None
        while time.monotonic() - start < args.timeout:
            time.sleep(3)
            counts = tab.evaluate(COUNT)
            if counts and not counts["busy"] and counts["pictures"]:
                break
        time.sleep(3)
        counts = tab.evaluate(COUNT)
        tab.evaluate(
            "document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer')?.scrollTo(0, 0)"
        )
        time.sleep(1)
        path = out / f"lab_{args.chapter}.png"
        path.write_bytes(tab.screenshot())
        # and the first figure, scrolled to the top of the notebook
        tab.evaluate(
            "document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img')"
            "?.scrollIntoView({block: 'start'})"
        )
        time.sleep(1)
        (out / f"lab_{args.chapter}_figure.png").write_bytes(tab.screenshot())
        print(f"lab_screenshot: {path}: {counts}  ({time.monotonic() - start:.0f} s after Run All)")
        if not counts or not counts["pictures"] or counts["raw_roles"]:
            return 1
        if args.save:
            source = ROOT / "chapters" / f"{args.chapter}.md"
            before = source.read_bytes()
            tab.evaluate("window.jupyterapp.commands.execute('docmanager:save'); true")
            saved = source.stat().st_mtime_ns
            deadline = time.monotonic() + 60
            while source.stat().st_mtime_ns == saved and time.monotonic() < deadline:
                time.sleep(1)  # the lab writes the file
            if source.stat().st_mtime_ns == saved:
                print(f"lab_screenshot: the lab did not save {source} within 60 s", file=sys.stderr)
                return 1
            after = source.read_bytes()
            if after != before:
                source.write_bytes(before)
                (out / f"{args.chapter}.saved.md").write_bytes(after)
                print(
                    f"lab_screenshot: saving from the lab changed {source} (restored; the saved text is in"
                    f" {out / (args.chapter + '.saved.md')})",
                    file=sys.stderr,
                )
                return 1
            print(f"lab_screenshot: saved from the lab after Run All: {source.name} is byte-identical")
        return 0
    finally:
        if browser is not None:
            browser.close()
        lab.terminate()
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lab.kill()


if __name__ == "__main__":
    sys.exit(main())

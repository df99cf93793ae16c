"""Site check: open every page of the built book in headless Chromium, as a reader would.

Each page is opened from disk (``file://``) with the network switched off, and the check fails
on any of:

- a page that does not load, or a local file it asks for that is missing;
- a console error or an uncaught exception (except the one the book theme logs on every page,
  ``THEBE_JS_URL has already been declared``: see ``IGNORED_CONSOLE``);
- an image, script, stylesheet or frame the page asks the network for;
- a figure that is text (``<Figure size 640x480 with 1 Axes>`` and other reprs) or a blank image,
  or an image that does not load;
- a figure drawn for a wider page than the column, which shrinks its text;
- code, output or a table wider than the column (the reader would scroll sideways);
- an internal link or cross-reference whose page or ``#anchor`` does not exist;
- a slider (``<input type=range>``) that, dragged with the mouse, does not move or does not
  change the picture of its widget (an ``<img>`` source, the visible SVG elements, or pixels);
- a chapter whose execution took longer than ``--max-chapter-seconds`` (the build records each
  notebook's run time in ``_build/.doctrees/environment.pickle``; the table is printed).

It writes a screenshot of every page under ``_build/screenshots/`` for review. Chromium is
driven through its DevTools protocol over a pipe (``--remote-debugging-pipe``), so no package
beyond the standard library is needed. ``make site-check`` runs it after ``make book``.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

# The one console error the book theme logs on every page: sphinx-book-theme and sphinx-thebe
# both declare `const THEBE_JS_URL` in an inline script. Harmless; nothing else is ignored.
IGNORED_CONSOLE = (re.compile(r"THEBE_JS_URL'? has already been declared"),)

# What a matplotlib object (or another display object) looks like when it reached the page as
# text instead of as a picture.
REPR_PATTERNS = (
    re.compile(r"<Figure size [\d.]+x[\d.]+ with \d+ Axes>"),
    re.compile(r"<(?:matplotlib|mpl_toolkits)\.[\w.]+(?: object)? at 0x[0-9a-fA-F]+>"),
    re.compile(r"<Axes(?:Subplot)?: [^>\n]{0,200}>"),
    re.compile(r"<IPython\.core\.display\.\w+ object>"),
)
# Only inside cell outputs: matplotlib's Text repr, as a cell's last expression prints it.
OUTPUT_REPR_PATTERNS = (re.compile(r"^\s*Text\(-?[\d.e+-]+, -?[\d.e+-]+, '", re.M),)

LOCAL_SCHEMES = ("file", "data", "blob", "about", "chrome", "devtools", "chrome-error")
MAX_FIGURE_SHRINK = 0.95  # a figure shown at less than 95 % of its drawn width: text shrinks
BLANK_FRACTION = 0.002  # fewer pixels than this differing from the dominant colour: blank


class CDPError(RuntimeError):
    pass


class Browser:
    """Headless Chromium, driven through the DevTools protocol on fds 3 and 4."""

    def __init__(self, binary: str, width: int, height: int, loopback: bool = False):
        """``loopback``: let the pages reach servers on this machine (a local JupyterLab);
        the site check leaves it off, so that a page can reach nothing at all."""
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        # Move the child's ends above 10 so that the dup2 onto 3 and 4 cannot clobber them.
        child_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)

        def _child_fds() -> None:  # runs in the child, before exec
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        self._profile = tempfile.mkdtemp(prefix="sitecheck-chromium-")
        args = [
            binary,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile}",
            f"--window-size={width},{height}",
            "--force-device-scale-factor=1",
            "--hide-scrollbars",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-sync",
            "--no-pings",
            # Belt and braces with the offline emulation below: any request that still leaves
            # goes to a proxy that does not exist.
            "--proxy-server=127.0.0.1:9",
            *([] if loopback else ["--proxy-bypass-list=<-loopback>"]),
            "about:blank",
        ]
        self.process = subprocess.Popen(
            args, preexec_fn=_child_fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(child_r)
        os.close(child_w)
        self._next_id = 0
        self._responses: dict[int, dict] = {}
        self.events: list[dict] = []
        self._cv = threading.Condition()
        self._closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = bytearray()
        while True:
            try:
                chunk = os.read(self._r, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cv:
                    self._closed = True
                    self._cv.notify_all()
                return
            start = len(buf)
            buf += chunk
            end = buf.find(b"\0", start)
            while end >= 0:
                message = json.loads(bytes(buf[:end]))
                del buf[: end + 1]
                with self._cv:
                    if "id" in message:
                        self._responses[message["id"]] = message
                    else:
                        message["_t"] = time.monotonic()
                        self.events.append(message)
                    self._cv.notify_all()
                end = buf.find(b"\0")

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        with self._cv:
            self._next_id += 1
            key = self._next_id
        message = {"id": key, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cv:
            while key not in self._responses:
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    raise CDPError(f"{method}: no answer from Chromium ({'it exited' if self._closed else 'timeout'})")
                self._cv.wait(left)
            response = self._responses.pop(key)
        if "error" in response:
            raise CDPError(f"{method}: {response['error'].get('message')}")
        return response.get("result", {})

    def wait_for(self, predicate, since: int, timeout: float) -> dict | None:
        """The first event from index ``since`` on that satisfies ``predicate``, or None."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for event in self.events[since:]:
                    if predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return None
                self._cv.wait(left)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except CDPError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._w)
        shutil.rmtree(self._profile, ignore_errors=True)


class Tab:
    """One page target with the domains the check listens to."""

    def __init__(self, browser: Browser, offline: bool = True):
        self.browser = browser
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.call(f"{domain}.enable")
        if offline:
            self.call(
                "Network.emulateNetworkConditions",
                {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
            )

    def call(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        return self.browser.call(method, params, self.session, timeout)

    def events(self, since: int, *methods: str) -> list[dict]:
        return [e for e in self.browser.events[since:] if e.get("sessionId") == self.session and e["method"] in methods]

    def evaluate(self, expression: str, timeout: float = 30):
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"check script failed: {text}")
        return result["result"].get("value")

    def screenshot(self, clip: dict | None = None, capture_beyond: bool = True) -> bytes:
        params: dict = {"format": "png", "captureBeyondViewport": capture_beyond}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode(self.call("Page.captureScreenshot", params, timeout=120)["data"])

    def navigate(self, url: str, timeout: float = 30) -> str | None:
        """Load ``url``; return None, or why it did not load. Waits for the network to settle."""
        since = len(self.browser.events)
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            return result["errorText"]
        loaded = self.browser.wait_for(
            lambda e: e.get("sessionId") == self.session and e["method"] == "Page.loadEventFired", since, timeout
        )
        if loaded is None:
            return f"no load event within {timeout:.0f} s"
        self.settle(since)
        return None

    def settle(self, since: int, quiet: float = 0.3, timeout: float = 10) -> None:
        """Wait until no request is in flight and none started for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            network = self.events(
                since, "Network.requestWillBeSent", "Network.loadingFinished", "Network.loadingFailed"
            )
            started = {e["params"]["requestId"] for e in network if e["method"] == "Network.requestWillBeSent"}
            done = {e["params"]["requestId"] for e in network if e["method"] != "Network.requestWillBeSent"}
            last = max((e["_t"] for e in network), default=0)
            if not (started - done) and time.monotonic() - last > quiet:
                break
            time.sleep(0.05)
        # two animation frames, so that what scripts changed is painted
        self.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


# --- what the page shows, read in the page --------------------------------------------------------

PAGE_SCRIPT = r"""
(async () => {
  const root = document.querySelector('article') || document.body;
  // images: load every one now (lazy ones too), then describe them
  const imgs = [...root.querySelectorAll('img')];
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  const box = e => { const r = e.getBoundingClientRect();
    return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}; };
  const visible = e => { const r = e.getBoundingClientRect(); const s = getComputedStyle(e);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
  const images = imgs.map(i => ({src: i.currentSrc || i.src, complete: i.complete,
    natural: [i.naturalWidth, i.naturalHeight], box: box(i), visible: visible(i),
    svg: /\.svg($|[?#])|^data:image\/svg/.test(i.currentSrc || i.src)}));
  const svgs = [...root.querySelectorAll('svg')].filter(s => !s.closest('svg:not(:scope) svg')
      && !s.closest('button') && !s.classList.contains('svg-inline--fa'))
    .map(s => ({box: box(s), visible: visible(s)})).filter(s => s.box.width >= 50 && s.box.height >= 50);
  const pictures = 'img, svg, canvas, video, object, iframe, picture';
  // a picture, not the copy button's icon that the theme adds to every code block
  const isPicture = e => !e.closest('button') && !(e.classList && e.classList.contains('svg-inline--fa'));
  const textFigures = [...root.querySelectorAll('figure')]
    .filter(f => ![...f.querySelectorAll(pictures)].some(isPicture))
    .map(f => f.textContent.trim().replace(/\s+/g, ' ').slice(0, 100));
  const outputs = [...root.querySelectorAll('.cell_output, .output')].map(o => o.textContent);
  // anything wider than the column that would scroll sideways
  const wide = [];
  const seen = new Set();
  for (const e of root.querySelectorAll('pre, table, .pst-scrollable-table-container, .cell_output, .output, .highlight')) {
    if (e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1 && ![...seen].some(s => s.contains(e))) {
      seen.add(e);
      wide.push({tag: e.tagName.toLowerCase() + (e.className ? '.' + String(e.className).split(' ')[0] : ''),
                 excess: e.scrollWidth - e.clientWidth, width: e.clientWidth,
                 text: e.textContent.trim().split('\n')[0].slice(0, 60)});
    }
  }
  // code names in tables without their break points after _ . / (_static/table_breaks.js)
  const unmarked = [...root.querySelectorAll('table code')]
    .filter(c => /[_./]\w/.test(c.textContent) && !c.querySelector('wbr'))
    .map(c => c.textContent.trim().slice(0, 60));
  const pageExcess = document.documentElement.scrollWidth - document.documentElement.clientWidth;
  // what it asks for: anything in the DOM that names a network resource, requested or not
  const fetched = [...document.querySelectorAll(
      'img[src], script[src], iframe[src], source[src], video[src], audio[src], embed[src], object[data], ' +
      'link[rel~="stylesheet"][href], link[rel~="preload"][href], link[rel~="modulepreload"][href], link[rel~="icon"][href]')]
    .map(e => e.src || e.href || e.data || '');
  return {
    url: location.href, title: document.title, text: root.textContent, outputs, images, svgs,
    textFigures, wide, pageExcess, fetched, unmarked,
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id)
      .concat([...document.querySelectorAll('a[name]')].map(a => a.name)),
    sliders: document.querySelectorAll('input[type=range]').length,
    column: (root.querySelector('p') || root).getBoundingClientRect().width,
  };
})()
"""

# For slider i: scroll it into view, find its widget (the nearest ancestor holding a picture),
# and describe the picture: image sources, visible SVG elements, and where it is.
SLIDER_SCRIPT = r"""
((i) => {
  const s = document.querySelectorAll('input[type=range]')[i];
  // no smooth scrolling (the theme sets it): the slider must be where we measure it
  document.documentElement.style.scrollBehavior = 'auto';
  s.scrollIntoView({block: 'center', inline: 'center', behavior: 'instant'});
  const pictures = 'img, svg, canvas, video';
  let widget = s.parentElement;
  while (widget && !widget.querySelector(pictures)) widget = widget.parentElement;
  const r = s.getBoundingClientRect();
  const label = s.id || s.getAttribute('aria-label') || s.name ||
    (s.labels && s.labels[0] ? s.labels[0].textContent.trim() : '') || `slider ${i + 1}`;
  const out = {label, value: s.value, min: s.min, max: s.max, disabled: s.disabled,
               rect: {x: r.left, y: r.top, width: r.width, height: r.height}, widget: !!widget};
  if (!widget) return out;
  const shown = e => { const c = getComputedStyle(e);
    return c.display !== 'none' && c.visibility !== 'hidden' && c.opacity !== '0'; };
  const items = [...widget.querySelectorAll(pictures)].filter(e => !e.closest('button'));
  out.signature = JSON.stringify({
    img: items.filter(e => e.tagName === 'IMG').map(e => [e.currentSrc || e.src, shown(e)]),
    svg: [...widget.querySelectorAll('svg *')].map((e, k) => shown(e) && !e.closest('[style*="display: none"]') ? k : -1)
      .filter(k => k >= 0),
  });
  const boxes = items.map(e => e.getBoundingClientRect()).filter(b => b.width > 0 && b.height > 0);
  if (boxes.length) {
    const x0 = Math.min(...boxes.map(b => b.left)), y0 = Math.min(...boxes.map(b => b.top));
    const x1 = Math.max(...boxes.map(b => b.right)), y1 = Math.max(...boxes.map(b => b.bottom));
    out.picture = {x: x0 + scrollX, y: y0 + scrollY, width: x1 - x0, height: y1 - y0};
  }
  return out;
})(%d)
"""


@dataclass
class PageResult:
    page: str
    problems: list[str] = field(default_factory=list)
    figures: int = 0
    sliders: int = 0
    seconds: float = 0.0
    ids: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)
    redirect: str | None = None


def is_blank(png: bytes) -> bool:
    """True when (almost) every pixel has the same colour."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16).reshape(-1, 3)
    if len(pixels) == 0:
        return True
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    dominant = colours[counts.argmax()]
    differing = (np.abs(pixels - dominant).sum(axis=1) > 24).mean()
    return bool(differing < BLANK_FRACTION)


def _short(url: str, root: Path) -> str:
    parts = urlsplit(url)
    if parts.scheme == "file":
        try:
            return str(Path(unquote(parts.path)).relative_to(root)) + (f"#{parts.fragment}" if parts.fragment else "")
        except ValueError:
            return unquote(parts.path)
    return url if len(url) < 100 else url[:97] + "..."


# Image i of the article scrolled to the middle of the window, decoded and painted; its box.
LOCATE_IMAGE = r"""
(async (i) => {
  const root = document.querySelector('article') || document.body;
  const e = root.querySelectorAll('img')[i];
  document.documentElement.style.scrollBehavior = 'auto';
  e.scrollIntoView({block: 'center', inline: 'nearest', behavior: 'instant'});
  try { await e.decode(); } catch (err) {}
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const r = e.getBoundingClientRect();
  return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height};
})(%d)
"""


def _looks_blank(tab: Tab, box: dict, attempts: int = 4, locate: str | None = None) -> bool:
    """A picture is blank only if every capture of it is: on a slow machine the first capture of a
    long page can come before the picture is painted, or the page can still move under it (a
    blank picture stays blank). ``locate``: a script that scrolls the picture into the window
    and returns its box again; the captures after the first are taken there, inside the window."""
    for k in range(attempts):
        if k and locate:
            shot = tab.screenshot(_clip(tab.evaluate(locate)), capture_beyond=False)
        else:
            shot = tab.screenshot(_clip(box))
        if not is_blank(shot):
            return False
        time.sleep(0.25 * (k + 1))
    return True


def _clip(box: dict) -> dict:
    return {
        "x": max(0.0, box["x"]),
        "y": max(0.0, box["y"]),
        "width": max(1.0, box["width"]),
        "height": max(1.0, box["height"]),
    }


def _track_x(rect: dict, fraction: float, pad: float = 8) -> float:
    """Where on a range input's track a value at ``fraction`` of its range sits (pad: half a thumb)."""
    return rect["x"] + pad + fraction * (rect["width"] - 2 * pad)


def check_sliders(tab: Tab, count: int, attempts: int = 3) -> list[str]:
    """Drag each slider with the mouse; its widget's picture must change.

    A drag that leaves the value or the picture unchanged is tried again (at most ``attempts``
    times, re-measuring the slider each time): a slider that works moves on every try, and a
    broken one fails them all, so a slow page cannot make the check pass or fail by chance.
    """
    problems = []
    for i in range(count):
        problem = None
        for _ in range(attempts):
            problem = _drag_slider(tab, i)
            if problem is None:
                break
        if problem:
            problems.append(problem)
    return problems


def _drag_slider(tab: Tab, i: int) -> str | None:
    """One drag of slider ``i`` across its track; the problem seen, or None."""
    before = tab.evaluate(SLIDER_SCRIPT % i)
    for _ in range(40):  # measured again until the scroll has landed and the layout is still
        time.sleep(0.05)
        again = tab.evaluate(SLIDER_SCRIPT % i)
        if again["rect"] == before["rect"]:
            break
        before = again
    before = again
    name = f"slider '{before['label']}'"
    if not before["widget"]:
        return f"{name}: no picture (img, svg, canvas) in the element around it"
    if before["disabled"] or before["rect"]["width"] < 4:
        return f"{name}: cannot be moved (disabled or not shown)"
    shot_before = tab.screenshot(_clip(before["picture"])) if before.get("picture") else b""
    lo, hi = float(before["min"] or 0), float(before["max"] or 100)
    frac = (float(before["value"]) - lo) / (hi - lo) if hi > lo else 0.0
    rect = before["rect"]
    y = rect["y"] + rect["height"] / 2
    start, end = _track_x(rect, frac), _track_x(rect, 0.9 if frac < 0.5 else 0.1)
    tab.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": start, "y": y})
    tab.call(
        "Input.dispatchMouseEvent",
        {"type": "mousePressed", "x": start, "y": y, "button": "left", "buttons": 1, "clickCount": 1},
    )
    for k in range(1, 9):
        x = start + (end - start) * k / 8
        tab.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y, "button": "left", "buttons": 1})
    tab.call(
        "Input.dispatchMouseEvent",
        {"type": "mouseReleased", "x": end, "y": y, "button": "left", "buttons": 0, "clickCount": 1},
    )
    tab.settle(len(tab.browser.events), quiet=0.2, timeout=5)
    after = tab.evaluate(SLIDER_SCRIPT % i)
    if after["value"] == before["value"]:
        # On a long page of large pictures Chromium can drop the drag that starts on the thumb;
        # a reader's click on the track moves the slider too: try that before failing.
        for kind, buttons in (("mousePressed", 1), ("mouseReleased", 0)):
            tab.call("Input.dispatchMouseEvent",
                     {"type": kind, "x": end, "y": y, "button": "left", "buttons": buttons, "clickCount": 1})  # fmt: skip
        tab.settle(len(tab.browser.events), quiet=0.2, timeout=5)
        after = tab.evaluate(SLIDER_SCRIPT % i)
    if after["value"] == before["value"]:
        return f"{name}: dragging it with the mouse does not move it (value stays {before['value']})"
    shot_after = tab.screenshot(_clip(before["picture"])) if before.get("picture") else b""
    if after["signature"] == before["signature"] and shot_after == shot_before:
        return f"{name}: moved from {before['value']} to {after['value']} but its picture did not change"
    return None


# during a capture the sticky header and sidebars scroll with the page, so that they appear once
FREEZE_STICKY = (
    "(() => { const s = document.createElement('style'); s.id = 'sitecheck-capture';"
    " s.textContent = '.bd-header, .bd-sidebar-primary, .bd-sidebar-secondary, .bd-header-article"
    " { position: static !important; }'; document.head.appendChild(s); })()"
)


def full_page_screenshot(tab: Tab) -> bytes:
    """The whole page as one PNG, as a reader scrolls it: one capture of the window per scroll
    position, stitched. (A capture beyond the window resizes the viewport, and the theme lays the
    page out again for that height: the column moved left and the tiles did not line up.)"""
    from PIL import Image

    tab.evaluate(FREEZE_STICKY)
    try:
        size = tab.call("Page.getLayoutMetrics")["cssContentSize"]
        width, height = int(size["width"]), int(size["height"])
        page = Image.new("RGB", (width, height), "white")
        top = 0
        while top < height:
            scrolled = tab.evaluate(
                f"new Promise(r => {{ window.scrollTo(0, {top}); "
                "requestAnimationFrame(() => requestAnimationFrame(() => r(window.scrollY))); })"
            )
            shot = Image.open(io.BytesIO(tab.screenshot(capture_beyond=False))).convert("RGB")
            page.paste(shot, (0, int(scrolled)))
            if int(scrolled) + shot.height >= height:
                break
            top = int(scrolled) + shot.height
    finally:
        tab.evaluate("document.getElementById('sitecheck-capture').remove(); window.scrollTo(0, 0)")
    out = io.BytesIO()
    page.save(out, format="PNG", optimize=False)
    return out.getvalue()


def check_page(tab: Tab, path: Path, root: Path, shots: Path | None) -> PageResult:
    result = PageResult(page=str(path.relative_to(root)))
    html = path.read_text(errors="replace")
    redirect = re.search(r'<meta http-equiv="Refresh" content="\d+; url=([^"]+)"', html, re.I)
    if redirect:  # index.html: a redirect to the first chapter; its target is checked as a link
        result.redirect = redirect.group(1)
        result.links = [(path.parent / redirect.group(1)).resolve().as_uri()]
        return result
    t0 = time.monotonic()
    since = len(tab.browser.events)
    error = tab.navigate(path.resolve().as_uri())
    if error:
        result.problems.append(f"does not load: {error}")
        return result
    page = tab.evaluate(PAGE_SCRIPT)
    # console errors and uncaught exceptions
    for event in tab.events(since, "Runtime.consoleAPICalled", "Runtime.exceptionThrown", "Log.entryAdded"):
        p = event["params"]
        if event["method"] == "Runtime.consoleAPICalled":
            if p["type"] not in ("error", "assert"):
                continue
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
        elif event["method"] == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            text = d.get("exception", {}).get("description") or d.get("text", "")
        else:
            if p["entry"]["level"] != "error":
                continue
            text = p["entry"]["text"] + (f" ({_short(p['entry']['url'], root)})" if p["entry"].get("url") else "")
        if not any(pattern.search(text) for pattern in IGNORED_CONSOLE):
            message = f"console error: {text.strip().splitlines()[0][:200]}"
            if message not in result.problems:
                result.problems.append(message)
    # requests: nothing from the network; every local file present
    requested = [e["params"]["request"]["url"] for e in tab.events(since, "Network.requestWillBeSent")]
    failed = {e["params"]["requestId"]: e["params"] for e in tab.events(since, "Network.loadingFailed")}
    urls = {
        e["params"]["requestId"]: e["params"]["request"]["url"] for e in tab.events(since, "Network.requestWillBeSent")
    }
    for url in dict.fromkeys(requested + page["fetched"]):
        if url and urlsplit(url).scheme not in LOCAL_SCHEMES:
            result.problems.append(f"asks the network for {_short(url, root)}")
    for key, info in failed.items():
        url = urls.get(key, "")
        if urlsplit(url).scheme == "file" and not info.get("canceled"):
            result.problems.append(f"missing local file {_short(url, root)} ({info.get('errorText')})")
    # figures: pictures, not text; not blank; drawn for the column
    for pattern in REPR_PATTERNS:
        for match in dict.fromkeys(pattern.findall(page["text"])):
            result.problems.append(f"a figure or display object came out as text: {match[:80]!r}")
    for pattern in OUTPUT_REPR_PATTERNS:
        for output in page["outputs"]:
            if pattern.search(output):
                result.problems.append(f"an output is a matplotlib repr: {output.strip()[:80]!r}")
                break
    for text in page["textFigures"]:
        result.problems.append(f"a figure holds no picture, only text: {text!r}")
    for i, image in enumerate(page["images"]):
        name = _short(image["src"], root)
        if not image["complete"] or image["natural"][0] == 0:
            result.problems.append(f"image does not load: {name}")
            continue
        result.figures += 1
        if image["visible"] and image["box"]["width"] >= 8 and image["box"]["height"] >= 8:
            if _looks_blank(tab, image["box"], locate=LOCATE_IMAGE % i):
                result.problems.append(f"blank image (one colour): {name}")
            shown, drawn = image["box"]["width"], image["natural"][0]
            if not image["svg"] and shown < MAX_FIGURE_SHRINK * drawn:
                result.problems.append(
                    f"figure drawn {drawn} px wide for a {shown:.0f} px column: its text shrinks to "
                    f"{shown / drawn:.0%} (draw it at most viz.FIG_WIDTH inches wide): {name}"
                )
    for svg in page["svgs"]:
        if svg["visible"]:
            result.figures += 1
            if _looks_blank(tab, svg["box"]):
                result.problems.append("blank inline SVG figure")
    # sideways scrolling
    for wide in page["wide"]:
        result.problems.append(
            f"{wide['tag']} is {wide['excess']} px wider than the column ({wide['width']} px), "
            f"the reader scrolls sideways: {wide['text']!r}"
        )
    if page["unmarked"]:
        result.problems.append(
            f"{len(page['unmarked'])} code names in tables can break between any two letters (no <wbr> "
            f"after _ . /; _static/table_breaks.js did not run?), e.g. {page['unmarked'][0]!r}"
        )
    if page["pageExcess"] > 1:
        result.problems.append(f"the page is {page['pageExcess']} px wider than the window")
    # the sliders first: a full-page capture resizes the viewport, which can leave the page
    # scrolled where the mouse events would miss the slider
    result.sliders = page["sliders"]
    result.problems += check_sliders(tab, page["sliders"])
    # screenshot for review (sliders as the check left them)
    if shots is not None:
        target = shots / path.relative_to(root).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(full_page_screenshot(tab))
    result.ids = set(page["ids"])
    result.links = page["links"]
    result.seconds = time.monotonic() - t0
    return result


def _ids_in_file(path: Path) -> set[str]:
    html = path.read_text(errors="replace")
    return set(re.findall(r'\bid="([^"]+)"', html)) | set(re.findall(r'<a [^>]*name="([^"]+)"', html))


def check_links(results: list[PageResult], root: Path) -> None:
    """Every link to a local file names a file that exists, and an #anchor that it holds."""
    ids = {(root / r.page).resolve(): r.ids for r in results if not r.redirect}
    for r in results:
        bad = []
        for url in r.links:
            parts = urlsplit(url)
            if parts.scheme != "file":
                continue
            target = Path(unquote(parts.path))
            if not target.exists():
                bad.append(f"link to a missing page: {_short(url, root)}")
                continue
            if parts.fragment and target.suffix == ".html":
                if target not in ids:
                    ids[target] = _ids_in_file(target)
                if unquote(parts.fragment) not in ids[target]:
                    bad.append(f"link to a missing anchor: {_short(url, root)}")
        r.problems += list(dict.fromkeys(bad))


def chapter_times(doctrees: Path) -> dict[str, float | None]:
    """Each notebook's execution time in seconds, as the build measured and stored it.

    myst-nb (``NbMetadataCollector.set_exec_data``) keeps ``{"runtime": seconds, ...}`` per
    document in the Sphinx environment, which Sphinx pickles into ``environment.pickle``; the
    time is jupyter-cache's ``single_nb_execution`` clock: kernel start to last cell.
    """
    with open(doctrees / "environment.pickle", "rb") as f:
        env = pickle.load(f)  # noqa: S301 - our own build's file
    metadata = getattr(env, "nb_metadata", {})
    return {doc: (data.get("exec_data") or {}).get("runtime") for doc, data in sorted(metadata.items())}


def find_chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def pages_of(root: Path) -> list[Path]:
    skip = {"_static", "_sources", "_images", "_downloads"}
    return sorted(p for p in root.rglob("*.html") if not skip & set(p.relative_to(root).parts[:-1]))


def check_site(
    root: Path,
    pages: list[Path] | None = None,
    shots: Path | None = None,
    width: int = 1280,
    height: int = 900,
    log=print,
) -> list[PageResult]:
    """Open each page (all of ``root`` by default) and return what was found on each."""
    binary = find_chromium()
    if binary is None:
        raise SystemExit("sitecheck: no chromium on PATH (`make site-check` installs Debian's package)")
    root = root.resolve()
    # a page given as a path inside the site (chapters/x.html) or as a path from here
    pages = [(p if p.exists() else root / p).resolve() for p in (pages or pages_of(root))]
    browser = Browser(binary, width, height)
    try:
        tab = Tab(browser)
        results = []
        for path in pages:
            try:
                result = check_page(tab, path, root, shots)
            except CDPError as error:
                result = PageResult(page=str(path.relative_to(root)), problems=[f"check failed: {error}"])
                tab = Tab(browser)  # a fresh tab for the next page
            results.append(result)
            note = (
                f"redirect to {result.redirect}"
                if result.redirect
                else (f"{result.seconds:4.1f} s, {result.figures} figures, {result.sliders} sliders")
            )
            log(f"{'FAIL' if result.problems else 'ok  '}  {result.page}  ({note})")
    finally:
        browser.close()
    check_links(results, root)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", nargs="?", default="_build/html", type=Path, help="the built site")
    parser.add_argument("--pages", nargs="*", type=Path, help="only these pages (default: every page)")
    parser.add_argument("--screenshots", default=Path("_build/screenshots"), type=Path)
    parser.add_argument("--doctrees", default=Path("_build/.doctrees"), type=Path)
    parser.add_argument("--max-chapter-seconds", default=60.0, type=float)
    parser.add_argument("--no-timings", action="store_true", help="skip the chapter run times")
    parser.add_argument("--width", default=1280, type=int, help="window width in CSS pixels")
    args = parser.parse_args(argv)

    if not (args.html / "index.html").exists() and not args.pages:
        print(f"sitecheck: {args.html}/index.html is missing: run `make book` first", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    if args.screenshots.exists():
        shutil.rmtree(args.screenshots)
    results = check_site(args.html, args.pages, args.screenshots, width=args.width)
    failed = [r for r in results if r.problems]
    for r in failed:
        print(f"\n{r.page}:")
        for problem in r.problems:
            print(f"  - {problem}")

    slow = []
    if not args.no_timings:
        try:
            times = chapter_times(args.doctrees)
        except FileNotFoundError:
            print(f"\nsitecheck: {args.doctrees}/environment.pickle is missing: no chapter run times", file=sys.stderr)
            return 2
        print(f"\nchapter run times, as measured by the build (limit {args.max_chapter_seconds:.0f} s each):")
        for doc, seconds in times.items():
            over = seconds is not None and seconds > args.max_chapter_seconds
            shown = "not executed" if seconds is None else f"{seconds:6.1f} s"
            print(f"  {doc:40} {shown}{'  TOO SLOW' if over else ''}")
            if over:
                slow.append(doc)
        total = sum(s for s in times.values() if s)
        print(f"  {'all chapters':40} {total:6.1f} s")

    n_problems = sum(len(r.problems) for r in results)
    print(
        f"\nsitecheck: {len(results)} pages, {n_problems} problems on {len(failed)} pages"
        f"{f', {len(slow)} chapters over the time limit' if slow else ''}; "
        f"screenshots in {args.screenshots}/; {time.monotonic() - t0:.0f} s"
    )
    return 1 if failed or slow else 0


if __name__ == "__main__":
    sys.exit(main())

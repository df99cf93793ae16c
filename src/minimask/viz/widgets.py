"""Sliders that work in the static book: opened from disk, no network, no kernel.

Two widgets, each one ``IPython.display.HTML`` (show it as a cell's last expression or
``glue`` it) made of one ``<div>`` container with a unique id, an ``<input type="range">``
and a few lines of inline JavaScript. Nothing is loaded from anywhere: images are inline
base64, the SVG has no namespace URL, the script is plain ES5.

- :func:`threshold_slider`: one image and every box as an SVG ``<rect>`` carrying its score;
  dragging hides the boxes whose score is not above the threshold (the test of torchvision
  ``RoIHeads.postprocess_detections``: ``scores > box_score_thresh``), and moves a marker on
  curves drawn beside it (e.g. precision and recall against the threshold).
- :func:`frames_slider`: pre-rendered frames (matplotlib Figures or PNG/JPEG bytes), one per
  slider step; dragging swaps the ``<img>`` source.

Without JavaScript both show their first state: the boxes above the initial threshold, or
the initial frame, as a plain ``<img>``/``<image>``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import itertools
import json
from collections.abc import Mapping, Sequence

import numpy as np
from IPython.display import HTML
from matplotlib.figure import Figure

from minimask.viz import NOT_A_CLASS, _image_array, class_color
from minimask.viz._draw import class_name

__all__ = ["threshold_slider", "frames_slider", "encode_image", "figure_bytes"]

_counter = itertools.count()


def _uid(prefix: str, payload: str) -> str:
    """An element id unique on the page: a per-kernel counter plus a hash of the content."""
    digest = hashlib.sha1(payload.encode()).hexdigest()[:8]
    return f"{prefix}-{next(_counter)}-{digest}"


def figure_bytes(fig: Figure, fmt: str = "jpeg", dpi: float | None = None, quality: int = 80) -> bytes:
    """A matplotlib Figure rendered to JPEG (default, ``quality``) or PNG bytes."""
    buffer = io.BytesIO()
    kwargs = {"pil_kwargs": {"quality": quality}} if fmt in ("jpeg", "jpg") else {}
    fig.savefig(buffer, format=fmt, dpi=dpi, facecolor="white", **kwargs)
    return buffer.getvalue()


def encode_image(image, fmt: str = "png") -> str:
    """A ``data:`` URL for an image: a (3, H, W) float tensor, an (H, W, 3) array, a Figure or bytes."""
    if isinstance(image, Figure):
        data, fmt = figure_bytes(image, fmt="jpeg" if fmt in ("jpeg", "jpg") else "png"), fmt
    elif isinstance(image, bytes | bytearray):
        data = bytes(image)
        fmt = "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpeg"
    else:
        from PIL import Image

        array = (_image_array(image) * 255.0 + 0.5).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG" if fmt == "png" else "JPEG")
        data = buffer.getvalue()
    mime = "image/png" if fmt == "png" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".") if x == x else "nan"


_STYLE = (
    "font-family:sans-serif;font-size:13px;display:flex;flex-wrap:wrap;gap:12px;"
    "align-items:flex-start;margin:0.5em 0 1em 0"
)


def threshold_slider(
    image,
    boxes,
    scores,
    labels,
    *,
    class_names: Sequence[str] | None = None,
    threshold: float = 0.05,
    curve: tuple[Sequence[float], Mapping[str, Sequence[float]]] | None = None,
    gt_boxes=None,
    label: str = "score threshold",
    value_range: tuple[float, float, float] = (0.0, 1.0, 0.01),
    width: int = 320,
    curve_width: int = 320,
    curve_xlabel: str | None = None,
    title: str | None = None,
    tags: bool = True,
) -> HTML:
    """An image with boxes and a slider: boxes whose score is not above the threshold hide.

    ``boxes`` (N, 4) xyxy in the pixels of ``image`` ((3, H, W) float tensor in [0, 1] or
    (H, W, 3) array); ``scores`` (N,), ``labels`` (N,) 1..K (coloured with the book's class
    colours, named by ``class_names[label]`` if given). A box is shown iff
    ``score > threshold`` (strict, as torchvision). ``curve = (xs, {name: ys})`` draws one
    line per name against the threshold (x in ``value_range``, y in [0, 1]) with a marker
    that follows the slider and a read-out of each curve at the threshold (nearest x).
    ``gt_boxes`` (G, 4) are drawn black dashed and never hide. ``tags``: write "class score"
    above each box (every box also has it as a hover tooltip); a legend of the class
    colours is written under the picture. ``width`` and
    ``curve_width``: display widths in CSS pixels of the picture and the curve panel
    (together they fit the book's ~680-px column).

    Returns one ``<div>`` with a unique id holding the slider, an ``<svg>`` whose first
    child is a plain ``<image>`` and one ``<rect>`` + ``<text>`` per box (hidden by
    ``display:none`` on each element), and the curve ``<svg>``.
    """
    picture = _image_array(image)
    height, width_px = picture.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(int)
    if not (len(boxes) == len(scores) == len(labels)):
        raise ValueError(f"boxes, scores, labels differ in length: {len(boxes)}, {len(scores)}, {len(labels)}")
    lo, hi, _ = value_range
    src = encode_image(image, "png")
    uid = _uid("mm-thr", src[-64:] + scores.tobytes().hex()[:64] + str(threshold))
    items = _box_items(boxes, scores, labels, class_names, threshold, max(height, width_px), tags)
    image_svg = _picture_svg(src, (height, width_px), items, gt_boxes, width)
    curve_svg, curve_js = "", ""
    if curve is not None:
        curve_svg, curve_js = _curve_svg(curve, threshold, (lo, hi), curve_xlabel or label, curve_width)
    heading = f"<div style='width:100%;font-weight:bold'>{html.escape(title)}</div>" if title else ""
    legend = _legend(labels, class_names, gt_boxes is not None, width)
    counting = f" of {len(scores)} boxes have a score above it"
    controls = _controls(label, value_range, threshold, width, f"{int((scores > threshold).sum())}{counting}")
    script = _threshold_script(uid, counting, curve_js)
    body = f'<div id="{uid}" class="mm-widget" style="{_STYLE}">{heading}{controls}<div>{image_svg}{legend}</div>{curve_svg}{script}</div>'
    return HTML(body)


def _controls(label: str, value_range: tuple[float, float, float], value: float, width: int, count: str) -> str:
    """The slider (``width`` CSS pixels), its read-out and the count of the boxes shown."""
    lo, hi, step = value_range
    return (
        f'<div style="width:100%"><label>{html.escape(label)} '
        f'<input type="range" min="{lo}" max="{hi}" step="{step}" value="{value}" '
        f'style="width:{width}px;vertical-align:middle" aria-label="{html.escape(label)}"> '
        f'<output class="mm-value">{value:.2f}</output></label> <span class="mm-count">{count}</span></div>'
    )


def _picture_svg(src: str, size: tuple[int, int], items: list[str], gt_boxes, width: int) -> str:
    """The picture (a plain ``<image>``, first child) with the boxes' ``items`` and the ground
    truth black dashed on it, ``width`` CSS pixels wide; the picture's pixel ``p`` is centred on ``p``."""
    height, width_px = size
    stroke = max(1.0, 0.008 * max(height, width_px))
    if gt_boxes is not None:
        dashes = f' stroke-dasharray="{2 * stroke:.1f}"'
        items = items + [_svg_rect(b, "black", 0.6 * stroke, dashes) + "/>"
                         for b in np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)]  # fmt: skip
    return (
        f'<svg class="mm-image" width="{width}" height="{width * height / width_px:.0f}" '
        f'viewBox="-0.5 -0.5 {width_px} {height}"><image href="{src}" x="-0.5" y="-0.5" width="{width_px}" '
        f'height="{height}" style="image-rendering:pixelated"/>' + "".join(items) + "</svg>"
    )


def _box_colour(label: int) -> str:
    """The class colour of ``label``; grey for a label that is no class (0 or below)."""
    return class_color(label) if label >= 1 else "#888888"


def _svg_rect(box, colour: str, stroke: float, extra: str = "") -> str:
    """An open ``<rect`` tag for one box (the caller closes it)."""
    x1, y1, x2, y2 = box
    return (
        f'<rect x="{x1:.2f}" y="{y1:.2f}" width="{max(x2 - x1, 0):.2f}" height="{max(y2 - y1, 0):.2f}" fill="none" '
        f'stroke="{colour}" stroke-width="{stroke:.2f}"{extra}'
    )


def _box_items(boxes, scores, labels, class_names, threshold: float, side: int, tags: bool) -> list[str]:
    """One ``<rect>`` (and ``<text>`` if ``tags``) per box, worst first so the best is drawn on top;
    each carries its score (``data-score``) and is hidden when the score is not above ``threshold``."""
    font, stroke = max(5.0, 0.032 * side), max(1.0, 0.008 * side)
    items = []
    for i in np.argsort(-scores, kind="stable")[::-1]:
        s, colour = scores[i], _box_colour(int(labels[i]))
        name = html.escape(class_name(int(labels[i]), class_names))
        hidden = "" if s > threshold else ' style="display:none"'
        tag = f' class="mm-box" data-score="{s:.6g}"{hidden}'
        items.append(_svg_rect(boxes[i], colour, stroke, tag) + f"><title>{name} {s:.3f}</title></rect>")
        if tags:
            x1, y1 = boxes[i][:2]
            items.append(
                f'<text x="{x1:.2f}" y="{y1 - 1 if y1 > font else y1 + font:.2f}" font-size="{font:.1f}" '
                f'fill="{colour}" stroke="white" stroke-width="{0.25 * stroke:.2f}" paint-order="stroke"'
                f"{tag}>{name} {s:.2f}</text>"
            )
    return items


def _legend(labels, class_names, ground_truth: bool, width: int) -> str:
    """A line of swatches under the picture: each class present, then the ground truth's dashes."""

    def swatch(border: str, text: str) -> str:
        return (
            '<span style="white-space:nowrap"><span style="display:inline-block;width:18px;height:0;'
            f'border-top:{border};vertical-align:middle"></span> {html.escape(text)}</span>'
        )

    swatches = [swatch(f"3px solid {_box_colour(k)}", class_name(k, class_names)) for k in sorted(set(labels.tolist()))]
    if ground_truth:
        swatches.append(swatch("2px dashed black", "ground truth"))
    return f'<div class="mm-legend" style="width:{width}px">{" &nbsp; ".join(swatches)}</div>'


def _threshold_script(uid: str, counting: str, curve_js: str) -> str:
    """The slider's script: show the boxes above the value, count them, move the curve's marker."""
    return (
        "<script>(function(){"
        f"var root=document.getElementById('{uid}');"
        "var input=root.querySelector('input[type=range]');"
        "var out=root.querySelector('.mm-value');var count=root.querySelector('.mm-count');"
        "var els=root.querySelectorAll('.mm-box');"
        "function update(){var t=parseFloat(input.value);var n=0;"
        "for(var i=0;i<els.length;i++){var on=parseFloat(els[i].getAttribute('data-score'))>t;"
        "els[i].style.display=on?'':'none';if(on&&els[i].tagName.toLowerCase()==='rect'){n++;}}"
        f"out.textContent=t.toFixed(2);count.textContent=n+{json.dumps(counting)};"
        + curve_js
        + "}input.addEventListener('input',update);input.addEventListener('change',update);})();</script>"
    )


# The curves beside the picture are no class: black, the one free Okabe-Ito colour, grey, then dashed.
SERIES_STYLES = (("#000000", ""), (NOT_A_CLASS, ""), ("#777777", "6 3"), ("#000000", "2 3"), (NOT_A_CLASS, "6 3"))


def _curve_svg(
    curve: tuple[Sequence[float], Mapping[str, Sequence[float]]],
    threshold: float,
    x_range: tuple[float, float],
    xlabel: str,
    width: int = 330,
) -> tuple[str, str]:
    """The curve panel (SVG) and the JavaScript that moves its marker and read-outs."""
    xs = np.asarray(curve[0], dtype=np.float64)
    series = {name: np.asarray(ys, dtype=np.float64) for name, ys in curve[1].items()}
    for name, ys in series.items():
        if ys.shape != xs.shape:
            raise ValueError(f"curve {name!r} has {ys.shape} values for {xs.shape} thresholds")
    rows = (len(series) + 1) // 2  # two series per legend row
    frame = _Frame(width, 236 + 16 * rows, x_range, 42 + 16 * rows)
    parts = [
        f'<svg class="mm-curve" width="{frame.W}" height="{frame.H}" viewBox="0 0 {frame.W} {frame.H}" font-size="13">'
    ]
    parts += frame.axes(xlabel)
    readouts = []
    j = int(np.abs(xs - threshold).argmin()) if len(xs) else 0
    for k, (name, ys) in enumerate(series.items()):
        colour, dashes = SERIES_STYLES[k % len(SERIES_STYLES)]
        dash = f' stroke-dasharray="{dashes}"' if dashes else ""
        ok = np.isfinite(ys)
        points = " ".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in zip(xs[ok], ys[ok], strict=True))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        value = _fmt(float(ys[j])) if len(xs) else "nan"
        lx, ly = frame.left + (k % 2) * (frame.W - frame.left) // 2, frame.H - frame.bottom + 30 + 16 * (k // 2 + 1)
        parts.append(
            f'<line x1="{lx}" x2="{lx + 16}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"{dash}/>'
            f'<text x="{lx + 20}" y="{ly}">{html.escape(name)}: <tspan class="mm-readout" data-series="{k}">'
            f"{value}</tspan></text>"
        )
        readouts.append([None if not np.isfinite(y) else round(float(y), 4) for y in ys])
    x_marker = f"{frame.px(threshold):.1f}"
    parts.append(
        f'<line class="mm-marker" x1="{x_marker}" x2="{x_marker}" y1="{frame.top}" y2="{frame.H - frame.bottom}" '
        'stroke="black" stroke-width="1.2" stroke-dasharray="3 2"/></svg>'
    )
    lo, hi = x_range
    js = (
        f"var xs={json.dumps([round(float(x), 5) for x in xs])};var ys={json.dumps(readouts)};"
        "var j=0;for(var k=1;k<xs.length;k++){if(Math.abs(xs[k]-t)<Math.abs(xs[j]-t)){j=k;}}"
        "var r=root.querySelectorAll('.mm-readout');"
        "for(var k2=0;k2<r.length;k2++){var v=ys[k2][j];"
        "r[k2].textContent=(v===null)?'nan':(Math.round(v*100)/100).toString();}"
        f"var m=root.querySelector('.mm-marker');var X={frame.left}+(t-{lo})/({hi}-{lo})*{frame.W - frame.left - frame.right};"
        "m.setAttribute('x1',X.toFixed(1));m.setAttribute('x2',X.toFixed(1));"
    )
    return "".join(parts), js


class _Frame:
    """The plot area of the curve panel: ``W`` x ``H`` pixels, x in ``x_range``, y in [0, 1]."""

    left, right, top = 42, 12, 12

    def __init__(self, width: int, height: int, x_range: tuple[float, float], bottom: int) -> None:
        self.W, self.H, self.bottom = width, height, bottom
        self.lo, self.hi = x_range

    def px(self, x: float) -> float:
        return self.left + (x - self.lo) / (self.hi - self.lo) * (self.W - self.left - self.right)

    def py(self, y: float) -> float:
        return self.top + (1.0 - y) * (self.H - self.top - self.bottom)

    def axes(self, xlabel: str) -> list[str]:
        """The grey plot area, ticks at 0, 1/4, ..., 1 of each axis, and the x label."""
        left, W, H, bottom = self.left, self.W, self.H, self.bottom
        parts = [
            f'<rect x="{left}" y="{self.top}" width="{W - left - self.right}" height="{H - self.top - bottom}" '
            'fill="#f0f0f0" stroke="#999" stroke-width="1"/>'
        ]
        for t in (0.0, 0.25, 0.5, 0.75, 1.0):
            y, x = self.py(t), self.px(self.lo + t * (self.hi - self.lo))
            parts.append(
                f'<line x1="{left - 4}" x2="{left}" y1="{y:.1f}" y2="{y:.1f}" stroke="#999"/>'
                f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>'
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{H - bottom}" y2="{H - bottom + 4}" stroke="#999"/>'
                f'<text x="{x:.1f}" y="{H - bottom + 16}" text-anchor="middle">{_fmt(self.lo + t * (self.hi - self.lo))}</text>'
            )
        parts.append(
            f'<text x="{(left + W - self.right) / 2:.1f}" y="{H - bottom + 30}" text-anchor="middle">{html.escape(xlabel)}</text>'
        )
        return parts


def frames_slider(
    frames: Sequence[Figure | bytes],
    values: Sequence[float | str],
    label: str,
    *,
    initial: int = 0,
    fmt: str = "jpeg",
    width: int | None = None,
    close: bool = True,
) -> HTML:
    """Pre-rendered frames swapped by a slider: frame ``i`` shows when the slider is at step ``i``.

    ``frames``: matplotlib Figures (rendered to JPEG, or PNG with ``fmt="png"``, then closed
    if ``close``) or PNG/JPEG bytes; ``values``: the parameter of each frame, shown beside
    the slider as "``label`` = value". The first state is a plain ``<img>`` of frame
    ``initial``; the others are inline ``data:`` URLs in the script.
    """
    if len(frames) != len(values):
        raise ValueError(f"{len(frames)} frames for {len(values)} values")
    if not frames:
        raise ValueError("frames_slider needs at least one frame")
    if not 0 <= initial < len(frames):
        raise ValueError(f"initial {initial} outside 0..{len(frames) - 1}")
    sources = []
    for frame in frames:
        sources.append(encode_image(frame, fmt))
        if close and isinstance(frame, Figure):
            import matplotlib.pyplot as plt

            plt.close(frame)
    shown = [v if isinstance(v, str) else _fmt(float(v)) for v in values]
    uid = _uid("mm-frames", "".join(s[-32:] for s in sources))
    size = f' style="width:{width}px;max-width:100%"' if width else ' style="max-width:100%"'
    body = (
        f'<div id="{uid}" class="mm-widget" style="{_STYLE}">'
        f'<div style="width:100%"><label>{html.escape(label)} '
        f'<input type="range" min="0" max="{len(frames) - 1}" step="1" value="{initial}" '
        f'style="width:300px;vertical-align:middle" aria-label="{html.escape(label)}"> '
        f'<output class="mm-value">{html.escape(label)} = {html.escape(shown[initial])}</output></label></div>'
        f'<img class="mm-frame" src="{sources[initial]}" alt="{html.escape(label)} = {html.escape(shown[initial])}"{size}>'
        "<script>(function(){"
        f"var root=document.getElementById('{uid}');"
        f"var srcs={json.dumps(sources)};var vals={json.dumps(shown)};"
        "var input=root.querySelector('input[type=range]');var img=root.querySelector('img.mm-frame');"
        "var out=root.querySelector('.mm-value');"
        "function update(){var i=parseInt(input.value,10);img.src=srcs[i];"
        f"var text={json.dumps(label)}+' = '+vals[i];out.textContent=text;img.alt=text;}}"
        "input.addEventListener('input',update);input.addEventListener('change',update);})();</script>"
        "</div>"
    )
    return HTML(body)

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

from minimask.viz import OKABE_ITO, _image_array, class_color

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
    lo, hi, step = value_range
    order = np.argsort(-scores, kind="stable")  # draw the best last, on top
    src = encode_image(image, "png")
    uid = _uid("mm-thr", src[-64:] + scores.tobytes().hex()[:64] + str(threshold))

    font = max(5.0, 0.032 * max(height, width_px))
    stroke = max(1.0, 0.008 * max(height, width_px))
    items = []
    for i in order[::-1]:
        x1, y1, x2, y2 = boxes[i]
        s = scores[i]
        colour = class_color(int(labels[i])) if labels[i] >= 1 else "#888888"
        name = (
            class_names[labels[i]] if class_names is not None and 0 <= labels[i] < len(class_names) else str(labels[i])
        )
        hidden = "" if s > threshold else ' style="display:none"'
        items.append(
            f'<rect class="mm-box" data-score="{s:.6g}" x="{x1:.2f}" y="{y1:.2f}" '
            f'width="{max(x2 - x1, 0):.2f}" height="{max(y2 - y1, 0):.2f}" fill="none" '
            f'stroke="{colour}" stroke-width="{stroke:.2f}"{hidden}><title>{html.escape(name)} {s:.3f}</title></rect>'
        )
        ty = y1 - 1 if y1 > font else y1 + font
        if not tags:
            continue
        items.append(
            f'<text class="mm-box" data-score="{s:.6g}" x="{x1:.2f}" y="{ty:.2f}" font-size="{font:.1f}" '
            f'fill="{colour}" stroke="white" stroke-width="{0.25 * stroke:.2f}" paint-order="stroke"'
            f"{hidden}>{html.escape(name)} {s:.2f}</text>"
        )
    if gt_boxes is not None:
        for x1, y1, x2, y2 in np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4):
            items.append(
                f'<rect x="{x1:.2f}" y="{y1:.2f}" width="{x2 - x1:.2f}" height="{y2 - y1:.2f}" fill="none" '
                f'stroke="black" stroke-width="{0.6 * stroke:.2f}" stroke-dasharray="{2 * stroke:.1f}"/>'
            )
    shown = int((scores > threshold).sum())
    display_h = width * height / width_px
    image_svg = (
        f'<svg class="mm-image" width="{width}" height="{display_h:.0f}" viewBox="-0.5 -0.5 {width_px} {height}">'
        f'<image href="{src}" x="-0.5" y="-0.5" width="{width_px}" height="{height}" '
        f'style="image-rendering:pixelated"/>' + "".join(items) + "</svg>"
    )

    curve_svg, curve_js = "", ""
    if curve is not None:
        curve_svg, curve_js = _curve_svg(curve, threshold, (lo, hi), curve_xlabel or label, curve_width)

    heading = f"<div style='width:100%;font-weight:bold'>{html.escape(title)}</div>" if title else ""
    present = sorted(set(labels.tolist()))
    swatches = [
        f'<span style="white-space:nowrap"><span style="display:inline-block;width:18px;height:0;'
        f'border-top:3px solid {class_color(k) if k >= 1 else "#888888"};vertical-align:middle"></span> '
        f"{html.escape(class_names[k] if class_names is not None and 0 <= k < len(class_names) else str(k))}</span>"
        for k in present
    ]
    if gt_boxes is not None:
        swatches.append(
            '<span style="white-space:nowrap"><span style="display:inline-block;width:18px;height:0;'
            'border-top:2px dashed black;vertical-align:middle"></span> ground truth</span>'
        )
    legend = f'<div class="mm-legend" style="width:{width}px">{" &nbsp; ".join(swatches)}</div>'

    controls = (
        f'<div style="width:100%"><label>{html.escape(label)} '
        f'<input type="range" min="{lo}" max="{hi}" step="{step}" value="{threshold}" '
        f'style="width:{width}px;vertical-align:middle" aria-label="{html.escape(label)}"> '
        f'<output class="mm-value">{threshold:.2f}</output></label> '
        f'<span class="mm-count">{shown} of {len(scores)} boxes have a score above it</span></div>'
    )
    script = (
        "<script>(function(){"
        f"var root=document.getElementById('{uid}');"
        "var input=root.querySelector('input[type=range]');"
        "var out=root.querySelector('.mm-value');var count=root.querySelector('.mm-count');"
        "var els=root.querySelectorAll('.mm-box');"
        "function update(){var t=parseFloat(input.value);var n=0;"
        "for(var i=0;i<els.length;i++){var on=parseFloat(els[i].getAttribute('data-score'))>t;"
        "els[i].style.display=on?'':'none';if(on&&els[i].tagName.toLowerCase()==='rect'){n++;}}"
        f"out.textContent=t.toFixed(2);count.textContent=n+' of {len(scores)} boxes have a score above it';"
        + curve_js
        + "}input.addEventListener('input',update);input.addEventListener('change',update);})();</script>"
    )
    body = f'<div id="{uid}" class="mm-widget" style="{_STYLE}">{heading}{controls}<div>{image_svg}{legend}</div>{curve_svg}{script}</div>'
    return HTML(body)


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
    W, H, left, right, top, bottom = width, 236 + 16 * rows, 42, 12, 12, 42 + 16 * rows
    lo, hi = x_range

    def px(x):
        return left + (x - lo) / (hi - lo) * (W - left - right)

    def py(y):
        return top + (1.0 - y) * (H - top - bottom)

    parts = [f'<svg class="mm-curve" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-size="13">']
    parts.append(
        f'<rect x="{left}" y="{top}" width="{W - left - right}" height="{H - top - bottom}" '
        'fill="#f0f0f0" stroke="#999" stroke-width="1"/>'
    )
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{left - 4}" x2="{left}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#999"/>'
            f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>'
        )
        xt = lo + t * (hi - lo)
        parts.append(
            f'<line x1="{px(xt):.1f}" x2="{px(xt):.1f}" y1="{H - bottom}" y2="{H - bottom + 4}" stroke="#999"/>'
            f'<text x="{px(xt):.1f}" y="{H - bottom + 16}" text-anchor="middle">{_fmt(xt)}</text>'
        )
    parts.append(
        f'<text x="{(left + W - right) / 2:.1f}" y="{H - bottom + 30}" text-anchor="middle">{html.escape(xlabel)}</text>'
    )
    readouts = []
    for k, (name, ys) in enumerate(series.items()):
        colour = OKABE_ITO[(4, 5, 2, 0, 6, 1)[k % 6]]
        ok = np.isfinite(ys)
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs[ok], ys[ok], strict=True))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        j = int(np.abs(xs - threshold).argmin()) if len(xs) else 0
        value = _fmt(float(ys[j])) if len(xs) else "nan"
        lx = left + (k % 2) * (W - left) // 2
        ly = H - bottom + 30 + 16 * (k // 2 + 1)
        parts.append(
            f'<line x1="{lx}" x2="{lx + 16}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>'
            f'<text x="{lx + 20}" y="{ly}">{html.escape(name)}: <tspan class="mm-readout" data-series="{k}">'
            f"{value}</tspan></text>"
        )
        readouts.append([None if not np.isfinite(y) else round(float(y), 4) for y in ys])
    parts.append(
        f'<line class="mm-marker" x1="{px(threshold):.1f}" x2="{px(threshold):.1f}" y1="{top}" y2="{H - bottom}" '
        'stroke="black" stroke-width="1.2" stroke-dasharray="3 2"/>'
    )
    parts.append("</svg>")
    js = (
        f"var xs={json.dumps([round(float(x), 5) for x in xs])};var ys={json.dumps(readouts)};"
        "var j=0;for(var k=1;k<xs.length;k++){if(Math.abs(xs[k]-t)<Math.abs(xs[j]-t)){j=k;}}"
        "var r=root.querySelectorAll('.mm-readout');"
        "for(var k2=0;k2<r.length;k2++){var v=ys[k2][j];"
        "r[k2].textContent=(v===null)?'nan':(Math.round(v*100)/100).toString();}"
        f"var m=root.querySelector('.mm-marker');var X={left}+(t-{lo})/({hi}-{lo})*{W - left - right};"
        "m.setAttribute('x1',X.toFixed(1));m.setAttribute('x2',X.toFixed(1));"
    )
    return "".join(parts), js


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

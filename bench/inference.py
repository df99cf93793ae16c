"""Inference speed: minimask against torchvision's Mask R-CNN, same weights, same images.

For each preset (``Config.torchvision_r50()`` with torchvision's seeded random
``maskrcnn_resnet50_fpn`` weights, and ``Config.shapes()`` with a seeded random torchvision
model built by ``compat.torchvision_model``) it times, in one process and interleaved
(torchvision, ours, ours, torchvision, ...), the whole eval forward on the same images, and
the mask pasting alone (100 masks of 28x28 into a 480x640 image: torchvision
``paste_masks_in_image`` vs ``minimask.paste.paste_masks``). It prints the median of
each and the ratio ours / torchvision (< 1: ours is faster), and checks that the outputs agree.

    python bench/inference.py              # about 2 minutes on 2 idle cores
    python bench/inference.py --quick      # under a minute
    python bench/inference.py --threads 1  # steadier on a machine shared with other work

(Two OpenMP threads on two cores that other processes also use slow torch down many times
over, torchvision's many small per-mask operations most; compare ratios from one run only.)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from torchvision.models.detection.roi_heads import paste_masks_in_image

from minimask import Config, compat
from minimask.data import noise_images
from minimask.paste import paste_masks


def interleaved(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[list[float], list[float]]:
    """Time ``a`` and ``b`` alternately (ABBA order) after one warm-up call each."""
    a(), b()
    times_a, times_b = [], []
    for i in range(repeats):
        order = ((a, times_a), (b, times_b)) if i % 2 == 0 else ((b, times_b), (a, times_a))
        for fn, out in order:
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return times_a, times_b


def report(name: str, tv_times: list[float], our_times: list[float]) -> float:
    tv_med, our_med = statistics.median(tv_times), statistics.median(our_times)
    ratio = our_med / tv_med
    print(f"  {name:<34} torchvision {tv_med * 1e3:9.1f} ms   minimask {our_med * 1e3:9.1f} ms   ratio {ratio:.3f}")
    return ratio


def test_images(seed: int, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Smooth random images: blurred noise plus a little fine noise (``data.noise_images``)."""
    return noise_images(seed, sizes)


def paste_inputs(seed: int, n: int = 100, size: tuple[int, int] = (480, 640)) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` soft 28x28 masks and boxes with log-uniform sides (8 to 400 px) inside the image."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    side = torch.exp(
        torch.empty(n, 2).uniform_(torch.log(torch.tensor(8.0)), torch.log(torch.tensor(400.0)), generator=g)
    )
    x1 = torch.rand(n, generator=g) * (w - side[:, 0])
    y1 = torch.rand(n, generator=g) * (h - side[:, 1])
    boxes = torch.stack((x1, y1, x1 + side[:, 0], y1 + side[:, 1]), dim=1)
    return torch.rand(n, 28, 28, generator=g), boxes


def max_differences(expected: list[dict], ours: list[dict]) -> str:
    counts = [(len(e["boxes"]), len(o["boxes"])) for e, o in zip(expected, ours, strict=True)]
    if any(a != b for a, b in counts):
        return f"DETECTION COUNTS DIFFER {counts}"
    box = max(
        (float((e["boxes"] - o["boxes"]).abs().max()) for e, o in zip(expected, ours, strict=True) if len(e["boxes"])),
        default=0.0,
    )
    score = max(
        (
            float((e["scores"] - o["scores"]).abs().max())
            for e, o in zip(expected, ours, strict=True)
            if len(e["boxes"])
        ),
        default=0.0,
    )
    mask = max(
        (float((e["masks"] - o["masks"]).abs().max()) for e, o in zip(expected, ours, strict=True) if len(e["boxes"])),
        default=0.0,
    )
    labels = all(torch.equal(e["labels"], o["labels"]) for e, o in zip(expected, ours, strict=True))
    return f"detections {[a for a, _ in counts]}, max |d box| {box:.2g} px, |d score| {score:.2g}, |d mask| {mask:.2g}, labels equal {labels}"


def bench_preset(name: str, tv: torch.nn.Module, images: list[torch.Tensor], repeats: int) -> float:
    ours = compat.from_torchvision(tv).eval()
    tv.eval()
    print(f"{name}: {len(images)} image(s) {[tuple(i.shape[-2:]) for i in images]}")
    with torch.no_grad():
        print("  check:", max_differences(tv(images), ours(images)))
        tv_times, our_times = interleaved(lambda: tv(images), lambda: ours(images), repeats)
    return report("whole forward (eval)", tv_times, our_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, one image per preset")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    r50_repeats, shapes_repeats, paste_repeats = (3, 10, 10) if args.quick else (7, 30, 30)
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} thread(s); repeats: r50 {r50_repeats}, shapes {shapes_repeats}, paste {paste_repeats}"
    )
    ratios = {}

    # 1. mask pasting alone: 100 masks into 480x640
    masks, boxes = paste_inputs(0)
    cfg = Config()
    ours_paste = paste_masks(masks, boxes, (480, 640), cfg)
    diff = float((ours_paste - paste_masks_in_image(masks[:, None], boxes, (480, 640))).abs().max())
    print(f"mask pasting: 100 masks 28x28 into 480x640 (max |difference| {diff:.2g})")
    tv_times, our_times = interleaved(
        lambda: paste_masks_in_image(masks[:, None], boxes, (480, 640)),
        lambda: paste_masks(masks, boxes, (480, 640), cfg),
        paste_repeats,
    )
    ratios["paste"] = report("paste_masks (torchvision rule)", tv_times, our_times)

    # 2. Config.shapes(): seeded random torchvision model from the Config
    torch.manual_seed(0)
    shapes_tv = compat.torchvision_model(Config.shapes())
    sizes = [(192, 192)] if args.quick else [(192, 192), (160, 200)]
    ratios["shapes"] = bench_preset("Config.shapes()", shapes_tv, test_images(1, sizes), shapes_repeats)

    # 3. Config.torchvision_r50(): torchvision's own builder, seeded random weights, a 480x640 image
    torch.manual_seed(0)
    r50 = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    ratios["r50"] = bench_preset("Config.torchvision_r50()", r50, test_images(2, [(480, 640)]), r50_repeats)

    print("ratios (minimask / torchvision, median times): " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()

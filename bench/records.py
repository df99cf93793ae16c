"""What the records cost: our eval forward against torchvision's, idle and under load.

Every stage of minimask keeps a record (the fate of every anchor and candidate, the NMS inputs
from which suppressors are computed when a reader asks). This checks that a forward does not pay
for it: torchvision's seeded random ``maskrcnn_resnet50_fpn`` weights and our copy, the same
image, timed interleaved (torchvision, ours, ours, torchvision, ...), at ``box_score_thresh``
0.05 (the default) and 0.0 (every candidate passes, as for AP or an explanation), at 320 px and
800 px, first on the idle machine, then while this script keeps every core busy with its own
bounded load (one spinning process per core, stopped at the end). Prints the median times and
the ratio ours / torchvision (< 1: ours is faster). The targets: <= 1.00 idle (within the
~2 % noise of two identical runs) and <= 1.05 under load.

    python bench/records.py            # about 4 minutes on 2 cores
    python bench/records.py --quick    # 320 px only, fewer repeats
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time

import torch
import torchvision
from inference import interleaved, max_differences, report, test_images

from minimask import compat


def spin(stop_at: float) -> None:
    """Burn one core until ``stop_at`` (a bound, should the parent die)."""
    x = 0
    while time.time() < stop_at:
        x = (x * 1103515245 + 12345) % 2147483648


class Load:
    """One spinning process per core while inside the ``with`` block (at most ``seconds``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.procs: list[mp.Process] = []

    def __enter__(self) -> Load:
        stop_at = time.time() + self.seconds
        ctx = mp.get_context("spawn")
        self.procs = [ctx.Process(target=spin, args=(stop_at,), daemon=True) for _ in range(os.cpu_count() or 2)]
        for p in self.procs:
            p.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="320 px only, fewer repeats")
    parser.add_argument("--repeats", type=int, default=0, help="timed repeats of each (default: 9 at 320 px, 5 at 800)")
    args = parser.parse_args()
    sizes = [320] if args.quick else [320, 800]
    repeats = {320: 5 if args.quick else 9, 800: 5}
    if args.repeats:
        repeats = dict.fromkeys(repeats, args.repeats)
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} thread(s)"
    )
    image = test_images(3, [(480, 640)])
    ratios = {}
    for size in sizes:
        for thresh in (0.05, 0.0):
            torch.manual_seed(0)
            tv = torchvision.models.detection.maskrcnn_resnet50_fpn(
                weights=None,
                weights_backbone=None,
                min_size=size,
                max_size=int(size * 1333 / 800),
                box_score_thresh=thresh,
            ).eval()
            ours = compat.from_torchvision(tv).eval()
            with torch.no_grad():
                print(f"{size} px, box_score_thresh {thresh}: check {max_differences(tv(image), ours(image))}")
                for state in ("idle", "busy"):
                    if state == "idle":
                        tv_t, our_t = interleaved(lambda: tv(image), lambda: ours(image), repeats[size])  # noqa: B023
                    else:
                        with Load(seconds=600):
                            tv_t, our_t = interleaved(lambda: tv(image), lambda: ours(image), repeats[size])  # noqa: B023
                    ratios[(size, thresh, state)] = report(f"{state}", tv_t, our_t)
    print("ratios (minimask / torchvision, median times):")
    for (size, thresh, state), r in ratios.items():
        print(f"  {size} px  thresh {thresh:<4}  {state}: {r:.3f}")


if __name__ == "__main__":
    main()

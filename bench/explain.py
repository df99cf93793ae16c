"""What explaining a data set costs: ``explain.explain_dataset`` against ``evaluate.evaluate``.

Both run over the same split with the same model in one process, interleaved (evaluate,
explain, explain, evaluate, ...); ``evaluate`` is the forward, the RLE encoding and COCOeval
for boxes and masks; ``explain_dataset`` is the forward until the shortlist, the masks of the
detections that may match an object by mask (``explain.may_match``), the matching, the
attribution of every miss and the kind of every false positive, and the box AP that fixing
each cause recovers (several COCOevals). It prints the median of each and the ratio
explain / evaluate (the budget: 1.5).

    python bench/explain.py                  # the shipped model on the committed val split
    python bench/explain.py --repeats 3 --threads 1

Measured 2026-11-25 on the 2-core development machine (shared with other work), one torch
thread, 3 interleaved runs: evaluate 4.83 s, explain_dataset 4.88 s, ratio 1.01. Under heavier
load the ratio moved between 0.83 and 1.10; explain skips the mask COCOeval that evaluate
runs and spends that time on the attribution and the fixed-AP COCOevals (box only).
Measured 2026-12-02 (matching by mask, masks of 738 of the 2,586 detections), one run under
heavy load (load average about 5 on 2 cores): evaluate 14.55 s, explain_dataset 8.99 s,
ratio 0.62.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch


def main() -> None:
    from minimask.data import shapes_val
    from minimask.evaluate import evaluate
    from minimask.explain import explain_dataset
    from minimask.weights import load_pretrained

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default="shapes")
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each (after one warm-up of each)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_pretrained(args.weights)
    dataset = shapes_val()
    jobs = {
        "evaluate": lambda: evaluate(model, dataset, progress=False),
        "explain_dataset": lambda: explain_dataset(model, dataset),
    }
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for job in jobs.values():  # warm-up
        job()
    for i in range(args.repeats):
        order = list(jobs) if i % 2 == 0 else list(reversed(jobs))
        for name in order:
            start = time.perf_counter()
            jobs[name]()
            times[name].append(time.perf_counter() - start)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{len(dataset)} images, weights {args.weights}")  # fmt: skip
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in med.items():
        print(f"  {name:<16} {t:7.2f} s  (runs: {', '.join(f'{x:.2f}' for x in times[name])})")
    print(f"  ratio explain_dataset / evaluate: {med['explain_dataset'] / med['evaluate']:.2f}")


if __name__ == "__main__":
    main()

"""Does every decision bind on the shapes data? Measured on a fresh val split.

Makes a val split with a seed the repository never uses (default 90210), runs a model over it
and prints what the book needs to be true of its data and model:

- the share of RoIs each FPN level pools (the level rule of chapter 5: each of P2-P5 >= 10 %);
- on crowd images, how many candidates the RPN's post-NMS cap and the detection cap drop
  (chapters 4 and 6: both > 0 on at least one image), read from the records' funnels;
- how well a nearest-mean-colour classifier tells the class (chapter 1: no better than the
  majority class + 10 points, since colour is drawn independently of the class);
- box and mask AP by pycocotools, per class and per COCO size, with the sub-pixel paste
  (targets: box AP >= 0.70, mask AP >= 0.65).

    python tools/binds.py                       # the shipped model, 100 fresh images
    python tools/binds.py --weights runs/shapes/model.safetensors --out binds.json

Exit status 0 when every target holds, 1 when one does not (the report says which).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

LEVEL_NAMES = ("P2", "P3", "P4", "P5")


def level_and_cap_counts(model, dataset, batch_size: int = 4) -> tuple[list[int], list[dict]]:
    """RoIs pooled per level over the split, and the two caps' drops on each crowd image."""
    levels = torch.zeros(len(LEVEL_NAMES), dtype=torch.int64)
    crowds = []
    model.eval()
    for start in tqdm(range(0, len(dataset), batch_size), desc="records", unit="batch"):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        with torch.no_grad():
            run = model.run([image for image, _ in items])
        for (_, target), cls, ll, sl in zip(items, run.classification, run.longlist, run.shortlist, strict=True):
            levels += torch.bincount(cls.roi_level, minlength=len(LEVEL_NAMES))
            if len(target["labels"]) >= 40:  # a crowd image
                crowds.append(
                    {
                        "image_id": int(target["image_id"]),
                        "objects": len(target["labels"]),
                        "rpn_cap_dropped": len(ll.dropped["cap"]),
                        "detection_cap_dropped": len(sl.dropped["cap"]),
                        "longlist_funnel": ll.funnel,
                        "shortlist_funnel": sl.funnel,
                    }
                )
    return levels.tolist(), crowds


def colour_classifier(dataset) -> dict[str, float]:
    """Nearest mean colour: class means of the objects' mean visible RGB fitted on every other
    object, accuracy on the rest, against always answering the most frequent class."""
    colours, labels = [], []
    for i in range(len(dataset)):
        image, target = dataset[i]
        for mask, label in zip(target["masks"].bool(), target["labels"].tolist(), strict=True):
            colours.append(image[:, mask].mean(dim=1).numpy())
            labels.append(label)
    colours, labels = np.stack(colours), np.array(labels)
    fit = np.arange(len(labels)) % 2 == 0
    classes = sorted(set(labels.tolist()))
    means = np.stack([colours[fit & (labels == c)].mean(axis=0) for c in classes])
    guess = np.array(classes)[np.argmin(((colours[~fit, None] - means[None]) ** 2).sum(-1), axis=1)]
    return {
        "accuracy": float((guess == labels[~fit]).mean()),
        "majority": float(np.bincount(labels[~fit]).max() / (~fit).sum()),
        "objects": len(labels),
    }


def main(argv: list[str] | None = None) -> int:
    from minimask.coco import CocoDataset
    from minimask.data import make_shapes
    from minimask.evaluate import evaluate
    from minimask.weights import load_pretrained

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default="shapes", help="'shapes' or a .safetensors file (default: shapes)")
    p.add_argument("--seed", type=int, default=90210, help="val seed, one the repository never uses (default: 90210)")
    p.add_argument("--n", type=int, default=100, help="images (default: 100)")
    p.add_argument("--out", default=None, help="JSON file for the report (default: print only)")
    args = p.parse_args(argv)
    model = load_pretrained(args.weights)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_shapes(Path(tmp) / "val", "val", args.n, args.seed, progress=True)
        dataset = CocoDataset(folder / "annotations.json", folder / "images")
        levels, crowds = level_and_cap_counts(model, dataset)
        colour = colour_classifier(dataset)
        model.config = model.config.replace(mask_paste="subpixel")
        ap = evaluate(model, dataset, per_class=True)
    shares = [n / max(sum(levels), 1) for n in levels]
    checks = {
        "each of P2-P5 pools >= 10 % of RoIs": min(shares) >= 0.10,
        "both caps drop candidates on a crowd image": any(
            c["rpn_cap_dropped"] > 0 and c["detection_cap_dropped"] > 0 for c in crowds
        ),
        "colour classifier <= majority + 10 points": colour["accuracy"] <= colour["majority"] + 0.10,
        "box AP >= 0.70 (sub-pixel paste)": ap["bbox"]["AP"] >= 0.70,
        "mask AP >= 0.65 (sub-pixel paste)": ap["segm"]["AP"] >= 0.65,
    }
    print(f"val seed {args.seed}, {args.n} images, weights {args.weights}")
    print(
        "RoIs per level: "
        + ", ".join(f"{n} {lv} ({s:.1%})" for n, lv, s in zip(levels, LEVEL_NAMES, shares, strict=True))
    )
    for c in crowds:
        print(f"crowd image {c['image_id']}: {c['objects']} objects, RPN post-NMS cap dropped "
              f"{c['rpn_cap_dropped']}, detection cap dropped {c['detection_cap_dropped']}")  # fmt: skip
    print(f"nearest-mean-colour classifier: {colour['accuracy']:.3f} accuracy, majority class "
          f"{colour['majority']:.3f} ({colour['objects']} objects)")  # fmt: skip
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    print(f"{'':18}" + "".join(f"{k:>7}" for k in keys))
    rows = [("all", ap)] + list(ap["per_class"].items())
    for name, entry in rows:
        for kind in ("bbox", "segm"):
            print(f"{name + ' ' + kind:18}" + "".join(f"{entry[kind][k]:7.3f}" for k in keys))
    for what, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    if args.out:
        report = {"seed": args.seed, "n": args.n, "weights": args.weights, "levels": dict(zip(LEVEL_NAMES, levels, strict=True)),
                  "crowds": crowds, "colour": colour, "ap": ap, "checks": checks}  # fmt: skip
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

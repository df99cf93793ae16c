"""Write the shipped model's measured quality, ``data/weights/shapes_eval.json``.

Everything comes from pycocotools' COCOeval (``minimask.evaluate``) on the committed val split:
box and mask AP under both paste rules (one forward), the paste ceilings, and box and mask AP
per class with the sub-pixel paste. ``tests/test_shipped.py`` checks the weights still give
these numbers (a regression check) and that the README states them.

    python tools/model_card.py                                   # the shipped weights
    python tools/model_card.py --weights runs/shapes/model.safetensors --out /tmp/eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PASTES = ("torchvision", "subpixel")


def card(weights: str) -> dict:
    from minimask import load_pretrained
    from minimask.data import shapes_val
    from minimask.evaluate import evaluate, paste_ceiling

    model = load_pretrained(weights)
    val = shapes_val()
    reports = evaluate(model, val, per_class=True, pastes=list(PASTES))
    out = {}
    for paste in PASTES:
        cfg = model.config.replace(mask_paste=paste)
        out[paste] = {
            "bbox": reports[paste]["bbox"],
            "segm": reports[paste]["segm"],
            "ceiling": paste_ceiling(val, cfg),
            "detections": reports[paste]["detections"],
        }
    out["per_class"] = reports["subpixel"]["per_class"]
    out["data"] = f"data/shapes/val ({len(val)} images, seed 0)"
    out["command"] = "python tools/model_card.py (minimask.evaluate.evaluate, per_class=True; paste_ceiling)"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default="shapes", help="'shapes' (the shipped file) or a .safetensors path")
    p.add_argument("--out", default=str(ROOT / "data" / "weights" / "shapes_eval.json"))
    args = p.parse_args(argv)
    out = Path(args.out)
    result = card(args.weights)
    out.write_text(json.dumps(result, indent=1) + "\n")
    box, mask = result["subpixel"]["bbox"]["AP"], result["subpixel"]["segm"]["AP"]
    print(f"wrote {out}: box AP {box:.3f}, mask AP {mask:.3f} (sub-pixel paste)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Summarise Detectron2's model-zoo Mask R-CNN configs for chapter 11's table.

    python tools/detectron2_model_zoo.py DETECTRON2_CHECKOUT [--out data/detectron2/model_zoo.json]

Reads every ``configs/**/*.yaml`` and ``projects/*/configs/**/*.yaml`` of a Detectron2 checkout
that builds a Mask R-CNN (``MODEL.MASK_ON: True`` once its ``_BASE_`` files are merged; not the
``quick_schedules`` of its own tests) with
``minimask.compat.read_detectron2_yaml`` (no Detectron2 code runs) and writes, per config, the
values it sets (base files merged, nothing else) or the reason the reader refused it. The book
feeds each to ``config_from_detectron2``. Nothing in CI runs this file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from minimask.compat import read_detectron2_yaml

ROOT = Path(__file__).resolve().parents[1]


def mask_rcnn_configs(checkout: Path) -> list[Path]:
    paths = sorted((checkout / "configs").rglob("*.yaml")) + sorted((checkout / "projects").glob("*/configs/**/*.yaml"))
    return [p for p in paths if not p.name.startswith("Base") and "quick_schedules" not in p.parts]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkout", type=Path)
    p.add_argument("--out", type=Path, default=ROOT / "data" / "detectron2" / "model_zoo.json")
    args = p.parse_args(argv)
    rows = []
    for path in mask_rcnn_configs(args.checkout):
        name = path.relative_to(args.checkout).as_posix()
        text = path.read_text()
        try:
            values = read_detectron2_yaml(path)
        except (ValueError, TypeError, FileNotFoundError) as err:
            if "MASK_ON: True" in text or "mask_rcnn" in path.name:
                rows.append({"config": name, "values": None, "unread": str(err).replace(str(args.checkout) + "/", "")})
            continue
        if values.get("MODEL", {}).get("MASK_ON") is True:
            rows.append({"config": name, "values": values, "unread": None})
    args.out.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    print(f"{len(rows)} Mask R-CNN configs -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

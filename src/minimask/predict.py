"""Chapter 9. Run a trained model on image files: a drawing and a JSON file per image.

``python -m minimask.predict IMAGE... --out DIR [--weights shapes] [--score 0.5]`` writes, for
each ``NAME.png``/``.jpg``, ``DIR/NAME.png`` (the detections drawn: box, class, score, mask
outline) and ``DIR/NAME.json`` (boxes in xyxy pixels of the original image, labels, class
names, scores, and masks as COCO RLE thresholded at ``config.mask_threshold``). Images are
read by ``minimask.coco.read_image``, the data loader's reader (any mode: grey, palette, RGBA,
16-bit). A missing or unreadable image or weights file stops it with a one-line error naming
the file (exit status 2).

``--detectron2 model_final.pth [--config config.yaml]`` runs a Detectron2 checkpoint instead of
``--weights`` (``compat.from_detectron2``: its weights and Detectron2's rules; without
``--config``, the model zoo's R50-FPN Mask R-CNN), with ``--explain`` too: a Detectron2 user
explains their own model from the command line (chapter 11).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from minimask.coco import read_image
from minimask.evaluate import encode_masks


def prediction_json(output: dict, class_names: list[str], threshold: float) -> dict:
    """One image's detections as a JSON-ready dict."""
    rles = encode_masks(output["masks"], threshold)
    labels = output["labels"].tolist()
    return {
        "boxes": [[round(v, 2) for v in b] for b in output["boxes"].tolist()],
        "labels": labels,
        "class_names": [class_names[i] if i < len(class_names) else str(i) for i in labels],
        "scores": [round(s, 5) for s in output["scores"].tolist()],
        "masks": rles,
        "mask_threshold": threshold,
    }


def load_model(weights: str = "shapes", device: str = "cpu", detectron2: str | None = None,
               config: str | None = None) -> tuple[torch.nn.Module, list[str]]:  # fmt: skip
    """The model in eval mode and its class names (index 0 "__background__"): ``weights`` (the
    shipped or a trained model), or a Detectron2 checkpoint and its config.yaml (chapter 11)."""
    if detectron2 is not None:
        from minimask.compat import detectron2_class_names, from_detectron2

        model = from_detectron2(detectron2, config).to(device)
        return model, detectron2_class_names(model.config.num_classes)
    from minimask.shapes import CLASS_NAMES
    from minimask.weights import load_pretrained

    return load_pretrained(weights, device=device), list(CLASS_NAMES)


@torch.no_grad()
def predict_files(paths: list[str], out: Path, weights: str = "shapes", score: float | None = None,
                  device: str = "cpu", progress: bool = True, detectron2: str | None = None,
                  config: str | None = None) -> list[Path]:  # fmt: skip
    """Predict every image in ``paths`` and write its drawing and JSON into ``out``."""
    from minimask import viz

    model, class_names = load_model(weights, device, detectron2, config)
    if score is not None:
        model.config = model.config.replace(box_score_thresh=score)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in tqdm(paths, desc="predict", disable=not progress):
        image = read_image(path)
        output = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
        stem = Path(path).stem
        (out / f"{stem}.json").write_text(json.dumps(prediction_json(output, class_names, model.config.mask_threshold)))
        fig = viz.detections(image, output, class_names, mask_threshold=model.config.mask_threshold)
        fig.savefig(out / f"{stem}.png", dpi=100)
        viz.plt.close(fig)
        written += [out / f"{stem}.png", out / f"{stem}.json"]
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m minimask.predict", description=__doc__.split("\n")[0])
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ... any mode)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--weights", default="shapes", help="'shapes' (shipped) or a .safetensors file")
    p.add_argument("--score", type=float, default=None, help="box_score_thresh (default: the config's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--explain", action="store_true",
                   help="also explain each image (chapter 10): DIR/NAME_explain.png and DIR/NAME_explain.txt")  # fmt: skip
    p.add_argument("--annotations", default=None,
                   help="with --explain: a COCO file with the images' objects (misses, false positives)")  # fmt: skip
    p.add_argument("--detectron2", metavar="CHECKPOINT", default=None,
                   help="a Detectron2 model_final.pth or model zoo .pkl instead of --weights (chapter 11)")  # fmt: skip
    p.add_argument("--config", metavar="YAML", default=None,
                   help="with --detectron2: its config.yaml (default: the model zoo's R50-FPN Mask R-CNN)")  # fmt: skip
    args = p.parse_args(argv)
    if args.annotations and not args.explain:
        p.error("--annotations needs --explain")
    if args.config and not args.detectron2:
        p.error("--config needs --detectron2")
    try:
        written = []
        if args.explain:  # chapter 10: lineage of each detection; with annotations, misses and false positives
            from minimask.trace import explain_files

            model = names = None
            if args.detectron2:  # chapter 11: a Detectron2 model explained (images checked before it loads)
                for path in args.images:
                    read_image(path)
                model, names = load_model(device=args.device, detectron2=args.detectron2, config=args.config)
            written += explain_files(args.images, Path(args.out), args.weights, args.annotations, args.score,
                                     args.device, model=model, class_names=names)  # fmt: skip
        written += predict_files(args.images, Path(args.out), args.weights, args.score, args.device,
                                 detectron2=args.detectron2, config=args.config)  # fmt: skip
    except (FileNotFoundError, ValueError) as err:  # an unreadable image or weights file: the error names it
        p.exit(2, f"error: {err}\n")
    print(f"wrote {len(written)} files into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Make a fixture with Detectron2 itself: a seeded checkpoint, its config and DefaultPredictor's outputs.

Run with a Python where Detectron2 is installed (the repository neither holds nor installs it;
CI never runs this file). It only calls Detectron2's public API:

    python tools/detectron2_fixture.py CONFIG.yaml OUT_DIR [--seed 7] [--opts KEY VALUE ...]

CONFIG.yaml is a model-zoo config (``configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml``
of a Detectron2 checkout); the model is narrowed (``--opts``, default: stem 8, res2 32 channels,
FPN 16, box head 64, mask head 16) so that the checkpoint stays small, and its weights are drawn
from ``--seed``: Detectron2's own initialisation (``build_model``), then every norm's statistics,
scale and shift and every bias drawn at random so that no layer is an identity, and the class
logits scaled so that scores spread over (0, 1). OUT_DIR receives:

- ``model_final.pth``: ``DetectionCheckpointer(model).save("model_final")``, and
  ``model_final.safetensors``: its ``"model"`` tensors (``minimask.compat.detectron2_safetensors``),
  the form the repository ships (no pickle);
- ``config.yaml``: ``cfg.dump()``, with ``MODEL.WEIGHTS`` pointing at nothing (set it to load);
- ``images/*.png``: the input images (RGB PNG; DefaultPredictor is given them as BGR arrays);
- ``outputs.json``: per image, ``DefaultPredictor``'s ``pred_boxes``, ``scores``, ``pred_classes``
  and ``pred_masks`` (COCO RLE), the proposals (boxes in the resized image, objectness logits)
  and the kept proposal rows of ``box_predictor.inference`` (which ``StandardROIHeads`` drops);
- ``PROVENANCE.md``: the Detectron2 commit, torch version, seed and command.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

NARROW = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "8",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "32",
    "MODEL.RESNETS.WIDTH_PER_GROUP", "8",
    "MODEL.FPN.OUT_CHANNELS", "16",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_BOX_HEAD.CONV_DIM", "16",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "16",
]  # fmt: skip


def seed_weights(model: torch.nn.Module, seed: int) -> None:
    """Every norm's statistics, scale and shift and every bias drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point() or "anchor" in name or name.startswith("pixel_"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif ".norm." in name and name.endswith("weight"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.25)
            elif name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)


def decisions(model, aug, bgr: np.ndarray) -> dict:
    """The decisions ``DefaultPredictor`` does not return, by Detectron2's public modules: the
    RPN's proposals (boxes, objectness logits), the box head's features and predictions, the
    kept proposal rows of ``box_predictor.inference`` (``StandardROIHeads`` drops them)."""
    with torch.no_grad():
        image = aug.get_transform(bgr).apply_image(bgr)
        tensor = torch.as_tensor(image.astype("float32").transpose(2, 0, 1))
        images = model.preprocess_image([{"image": tensor, "height": bgr.shape[0], "width": bgr.shape[1]}])
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
        heads = model.roi_heads
        boxes = [x.proposal_boxes for x in proposals]
        box_features = heads.box_head(heads.box_pooler([features[f] for f in heads.box_in_features], boxes))
        predictions = heads.box_predictor(box_features)
        _, kept = heads.box_predictor.inference(predictions, proposals)
        pooled = heads.mask_pooler([features[f] for f in heads.mask_in_features], [b[:300] for b in boxes])
        mask_logits = heads.mask_head.layers(pooled)
    return {
        "image": image,
        "proposals": proposals,
        "box_features": box_features,
        "kept": kept,
        "mask_logits": mask_logits,
    }


def spread_logits(model, d: dict, logit_std: float, mask_std: float) -> None:
    """Scale the class-logit and mask-logit layers (Detectron2 draws them with std 0.01 and 0.001)
    so that, on the first image, class logits spread by ``logit_std`` and mask logits by
    ``mask_std`` around 0: scores between 0 and 1, masks neither empty nor full."""
    with torch.no_grad():
        cls = model.roi_heads.box_predictor.cls_score
        cls.weight.mul_(logit_std / float(cls(d["box_features"]).std()))
        predictor = model.roi_heads.mask_head.predictor
        logits = d["mask_logits"] - predictor.bias[:, None, None]
        scale = mask_std / float(logits.std(dim=(2, 3)).mean())  # the spread within a mask
        predictor.weight.mul_(scale)
        predictor.bias.copy_(-(logits * scale).mean(dim=(0, 2, 3)))  # each class's mask logits centred on 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("out", type=Path)
    p.add_argument("--images", nargs="+", required=True, help="RGB image files")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--logit-std", type=float, default=3.0)
    p.add_argument("--mask-std", type=float, default=2.0)
    p.add_argument("--opts", nargs="*", default=[], help="KEY VALUE pairs after the narrowing ones")
    p.add_argument("--commit", default="", help="Detectron2's commit, when its source is not a git checkout")
    args = p.parse_args(argv)

    import detectron2
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.data import transforms as T
    from detectron2.engine import DefaultPredictor
    from detectron2.modeling import build_model
    from pycocotools import mask as mask_utils

    cfg = get_cfg()
    cfg.merge_from_file(args.config)
    cfg.merge_from_list(NARROW + list(args.opts) + ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    torch.set_num_threads(1)  # as the tests run: the same sums in the same order
    torch.manual_seed(args.seed)
    model = build_model(cfg).eval()
    seed_weights(model, args.seed)
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    first = np.asarray(Image.open(args.images[0]).convert("RGB"))[:, :, ::-1].copy()
    spread_logits(model, decisions(model, aug, first), args.logit_std, args.mask_std)
    args.out.mkdir(parents=True, exist_ok=True)
    DetectionCheckpointer(model, save_dir=str(args.out)).save("model_final")
    (args.out / "config.yaml").write_text(cfg.dump())
    cfg.MODEL.WEIGHTS = str(args.out / "model_final.pth")
    predictor = DefaultPredictor(cfg)

    (args.out / "images").mkdir(exist_ok=True)
    records = []
    for path in args.images:
        name = Path(path).name
        shutil.copy(path, args.out / "images" / name)
        rgb = np.asarray(Image.open(path).convert("RGB"))
        bgr = rgb[:, :, ::-1].copy()
        out = predictor(bgr)["instances"]
        d = decisions(predictor.model, predictor.aug, bgr)  # what DefaultPredictor does not return
        image, proposals, kept = d["image"], d["proposals"], d["kept"]
        masks = out.pred_masks.numpy()
        rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
        records.append(
            {
                "file_name": name,
                "height": int(rgb.shape[0]),
                "width": int(rgb.shape[1]),
                "resized": [int(image.shape[0]), int(image.shape[1])],
                "boxes": out.pred_boxes.tensor.tolist(),
                "scores": out.scores.tolist(),
                "classes": out.pred_classes.tolist(),
                "masks": [{"size": r["size"], "counts": r["counts"].decode()} for r in rles],
                "proposal_boxes": proposals[0].proposal_boxes.tensor.tolist(),
                "objectness_logits": proposals[0].objectness_logits.tolist(),
                "kept": kept[0].tolist(),
            }
        )
        print(f"{name}: {len(out)} detections, {len(proposals[0])} proposals", file=sys.stderr)
    (args.out / "outputs.json").write_text(json.dumps(records))
    from minimask.compat import detectron2_safetensors

    sha = detectron2_safetensors(args.out / "model_final.pth", args.out / "model_final.safetensors")
    src = Path(detectron2.__file__).resolve().parents[1]
    git = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = args.commit or (git.stdout.strip() if git.returncode == 0 else "")
    config_name = "/".join(Path(args.config).resolve().parts[-2:])
    images = " ".join(Path(p).name for p in args.images)
    (args.out / "PROVENANCE.md").write_text(
        "# Made by Detectron2\n\n"
        f"- Detectron2 {detectron2.__version__}, commit {commit or 'unknown (source archive)'}; torch {torch.__version__}\n"
        f"- config: Detectron2's `configs/{config_name}` narrowed by `{' '.join(NARROW + list(args.opts))}`\n"
        f"- weights: `build_model` under `torch.manual_seed({args.seed})`, then (tools/detectron2_fixture.py) "
        f"`seed_weights`: norm statistics, scales, shifts and biases drawn from seed {args.seed}; `spread_logits`: "
        f"class and mask logit layers scaled to a spread of {args.logit_std} and {args.mask_std} on the first image\n"
        "- outputs: `DefaultPredictor(cfg)(bgr)` on each image of `images/` (read as RGB, channels reversed)\n"
        f"- images: {images} of the shapes val split (`data/shapes/val/images`)\n"
        f"- command: `python tools/detectron2_fixture.py <detectron2>/configs/{config_name} OUT --images ... "
        f"--seed {args.seed}{' --opts ' + ' '.join(args.opts) if args.opts else ''}`, torch with one thread\n"
        f'- stored: `model_final.safetensors`, the `"model"` tensors of the checkpointer\'s `model_final.pth` '
        f"(sha256 {sha}), tensor for tensor (`compat.detectron2_safetensors`); the pickle, with its optimizer and "
        "scheduler state, is not shipped\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

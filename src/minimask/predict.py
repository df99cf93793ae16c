"""Chapter 9. Run a trained model on image files: a drawing and a JSON file per image.

``python -m minimask.predict IMAGE... --out DIR [--weights shapes] [--score 0.5]`` writes, for
each image ``NAME.EXT``, ``DIR/NAME.png`` (the detections drawn: box, class, score, mask
outline) and ``DIR/NAME.json`` (boxes in xyxy pixels of the original image, labels, class
names, scores, and masks as COCO RLE thresholded at ``config.mask_threshold``). Inputs that
share a name get distinct outputs (``output_names``): ``x.png x.jpg`` -> ``x_png.*``, ``x_jpg.*``;
``a/x.png b/x.png`` -> ``x_1.*``, ``x_2.*``. It never writes over a file it did not write
itself (an input image, a user's file in ``DIR``): it stops first, naming the file. Images are
read by ``minimask.coco.read_image``, the data loader's reader (any format and mode Pillow
reads, turned as the photo's EXIF orientation says).

``--detectron2 model_final.pth [--config config.yaml]`` runs a Detectron2 checkpoint instead of
``--weights`` (``compat.from_detectron2``: its weights and Detectron2's rules; without
``--config``, the model zoo's R50-FPN Mask R-CNN), with ``--explain`` too: a Detectron2 user
explains their own model from the command line (chapter 11).

A mistake in the input (a missing or unreadable image, weights or config file, a bad option)
stops it before any work with one line naming the file or option, exit status 2 (``minimask.cli``).
"""

from __future__ import annotations

import copy
import json
import re
import sys
import warnings
from collections import Counter
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from minimask import cli, coco_eval
from minimask.coco import CocoDataset, read_annotations, read_image
from minimask.explain import image_report
from minimask.trace import explain

WRITER = "minimask.predict"  # in each PNG's "Software" field and the explain text's first line


def prediction_json(output: dict, class_names: list[str], threshold: float) -> dict:
    """One image's detections as a JSON-ready dict."""
    rles = coco_eval.encode_masks(output["masks"], threshold)
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


# --- output names: distinct, and never over a file this command did not write ------------------------
def output_files(name: str) -> list[str]:
    """The files written for an image whose output name is ``name`` (the explain ones with ``--explain``)."""
    return [f"{name}.png", f"{name}.json", f"{name}_explain.png", f"{name}_explain.txt"]


def output_names(paths: list[str]) -> list[str]:
    """A distinct output name per input. Its stem; when several inputs share a stem (letter case
    ignored), ``stem_ext`` if their extensions differ, else ``stem_1``, ``stem_2`` ...; then
    ``_2``, ``_3`` ... added while any of its ``output_files`` is another input's."""
    stems = [Path(p).stem for p in paths]
    groups: dict[str, list[int]] = {}
    for i, stem in enumerate(stems):
        groups.setdefault(stem.casefold(), []).append(i)
    bases = list(stems)
    for members in groups.values():
        if len(members) > 1:
            exts = Counter(Path(paths[i]).suffix.casefold() for i in members)
            for k, i in enumerate(members, start=1):
                ext = Path(paths[i]).suffix.lstrip(".")
                bases[i] = f"{stems[i]}_{ext}" if ext and exts[f".{ext.casefold()}"] == 1 else f"{stems[i]}_{k}"
    taken: set[str] = set()
    names = []
    for base in bases:
        name, k = base, 1
        while any(f.casefold() in taken for f in output_files(name)):
            k += 1
            name = f"{base}_{k}"
        taken.update(f.casefold() for f in output_files(name))
        names.append(name)
    return names


def written_by_predict(path: Path) -> bool:
    """Whether ``path`` is a file this command wrote (so it may be written again)."""
    try:
        if path.suffix == ".json":
            return {"boxes", "labels", "scores", "masks", "mask_threshold"} <= set(json.loads(path.read_text()))
        if path.suffix == ".txt":
            return path.read_text().startswith(WRITER)
        with Image.open(path) as pil:
            return pil.info.get("Software") == WRITER
    except (OSError, ValueError, TypeError):
        return False


def check_outputs(paths: list[str], names: list[str], out: Path, explain: bool) -> None:
    """A ``cli.UserError`` if an output would replace an input image or a file this command did not write."""
    inputs = {Path(p).resolve() for p in paths}
    for name in names:
        for file in output_files(name)[: 4 if explain else 2]:
            target = out / file
            if target.resolve() in inputs:
                raise cli.UserError(f"--out {out}: {file} would replace the input image {target}; choose another --out")
            if target.exists() and not written_by_predict(target):
                raise cli.UserError(f"--out {out}: {target} exists and was not written by {WRITER}; "
                                    "choose another --out or move that file")  # fmt: skip


# --- the work ------------------------------------------------------------------------------------------
def _save(fig, path: Path, **kwargs) -> None:
    from minimask import viz

    fig.savefig(path, dpi=100, metadata={"Software": WRITER}, **kwargs)
    viz.plt.close(fig)


@torch.no_grad()
def predict_files(paths: list[str], out: Path, weights: str = "shapes", score: float | None = None,
                  device: str = "cpu", progress: bool = True, detectron2: str | None = None,
                  config: str | None = None, names: list[str] | None = None, model=None,
                  class_names: list[str] | None = None) -> list[Path]:  # fmt: skip
    """Predict every image in ``paths`` and write its drawing and JSON into ``out`` (as
    ``names``, default ``output_names(paths)``); ``model`` and its ``class_names`` if given."""
    from minimask import viz

    if model is None:
        model, class_names = load_model(weights, device, detectron2, config)
    if score is not None:
        model.config = model.config.replace(box_score_thresh=score)
    names = output_names(paths) if names is None else names
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, name in tqdm(list(zip(paths, names, strict=True)), desc="predict", disable=not progress):
        image = read_image(path)
        output = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
        threshold = model.config.mask_threshold
        (out / f"{name}.json").write_text(json.dumps(prediction_json(output, class_names, threshold)))
        _save(viz.detections(image, output, class_names, mask_threshold=threshold), out / f"{name}.png")
        written += [out / f"{name}.png", out / f"{name}.json"]
    return written


def _image_ids(table, file_name: str) -> set[int]:
    return {i for i, info in table.images.items() if Path(info["file_name"]).name == file_name}


def _skipped_line(table, file_name: str) -> str:
    """The annotations of ``file_name`` that ``coco.read_annotations`` skipped as invalid, as one line."""
    image_ids = _image_ids(table, file_name)
    found = [(a, why) for _, a, why in table.skipped if table.skipped_image_ids.get(a) in image_ids]
    if not found:
        return ""
    listed = "; ".join(f"id {a}: {why}" for a, why in found)
    return f"{len(found)} annotation(s) skipped as invalid, counted as no object (never matched or missed): {listed}"


def targets_for_files(paths: list[str], annotation_file: str) -> tuple[list[dict[str, torch.Tensor]], list[str]]:
    """The target of each image file from a COCO annotation file, found by file name, and the class names.

    Raises ``FileNotFoundError``/``ValueError`` naming the file: a missing or malformed
    annotation file (``coco.read_annotations``), an image whose name is not in it, or whose
    size differs from the file's. Annotations with an invalid box or polygon are no object
    (``coco.AnnotationTable.skipped_summary``): said once, for these images only, as a warning.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # said below, for the images asked about only
        ds = CocoDataset(annotation_file, ".")
    by_name = {Path(ds.image_info(i)["file_name"]).name: i for i in range(len(ds))}
    out = []
    for path in paths:
        name = Path(path).name
        if name not in by_name:
            raise ValueError(f"{path}: no image named {name!r} in {annotation_file}")
        i = by_name[name]
        # read the image from where it is: images_dir / file_name == path
        depth = len(Path(ds.image_info(i)["file_name"]).parts)
        item = copy.copy(ds)
        item.images_dir = Path(path).parents[depth - 1]
        out.append(item[i][1])
    skipped = ds.table.skipped_summary({ds.ids[by_name[Path(p).name]] for p in paths})
    if skipped:
        warnings.warn(skipped, UserWarning, stacklevel=2)
    return out, list(ds.class_names)


@torch.no_grad()
def explain_images(paths: list[str], out: Path, names: list[str], model, class_names: list[str],
                   annotations: str | None = None, device: str = "cpu", progress: bool = True) -> list[Path]:  # fmt: skip
    """``--explain`` (chapter 10): per image ``NAME_explain.png`` and ``NAME_explain.txt`` (each
    detection's lineage; with ``annotations``, the misses and false positives, and the image's
    annotations skipped as invalid, listed by id)."""
    from minimask.viz import trace as vtrace  # matplotlib: only when figures are drawn

    targets, table = [None] * len(paths), None
    if annotations is not None:
        table = read_annotations(annotations)
        image_ids = set().union(*(_image_ids(table, Path(p).name) for p in paths))
        if table.skipped_summary(image_ids):  # the one policy for invalid annotations, said once
            cli.warn(table.skipped_summary(image_ids))
        with warnings.catch_warnings():  # said above, once, as one line
            warnings.simplefilter("ignore", UserWarning)
            targets, class_names = targets_for_files(paths, annotations)
        if len(class_names) > model.config.num_classes:  # the trace indexes the model's classes by label
            raise cli.UserError(f"--annotations {annotations}: {len(class_names) - 1} categories, more than the "
                                f"model's {model.config.num_classes - 1} classes")  # fmt: skip
    written = []
    for path, name, target in tqdm(list(zip(paths, names, targets, strict=True)), desc="explain",
                                   disable=not progress):  # fmt: skip
        image = read_image(path)
        tr = explain(model, image.to(device), target)
        text = image_report(tr, class_names)
        skipped = _skipped_line(table, Path(path).name) if table is not None else ""
        matched = re.search(r"objects matched at IoU [\d.]+", text)
        if skipped and matched:
            text = f"{text[: matched.end()]} ({skipped}){text[matched.end() :]}"
        (out / f"{name}_explain.txt").write_text(f"{WRITER} --explain: {path}\n{text}\n")
        _save(vtrace.errors(image, tr, class_names), out / f"{name}_explain.png", bbox_inches="tight")
        written += [out / f"{name}_explain.png", out / f"{name}_explain.txt"]
    return written


# --- the command line ------------------------------------------------------------------------------------
def _parser() -> cli.Parser:
    p = cli.Parser("python -m minimask.predict", description=__doc__.split("\n")[0])
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, TIFF ... any format and mode Pillow reads)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--weights", default=None, help="'shapes' (shipped) or a .safetensors file (default: shapes)")
    p.add_argument("--score", type=cli.number(0.0, 1.0), default=None,
                   help="box_score_thresh in [0, 1] (default: the weights' config)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--explain", action="store_true",
                   help="also explain each image (chapter 10): DIR/NAME_explain.png and DIR/NAME_explain.txt")  # fmt: skip
    p.add_argument("--annotations", default=None,
                   help="with --explain: a COCO file with the images' objects (misses, false positives)")  # fmt: skip
    p.add_argument("--detectron2", metavar="CHECKPOINT", default=None,
                   help="a Detectron2 model_final.pth, model zoo .pkl or their .safetensors instead of --weights (chapter 11)")  # fmt: skip
    p.add_argument("--config", metavar="YAML", default=None,
                   help="with --detectron2: its config.yaml (default: the model zoo's R50-FPN Mask R-CNN)")  # fmt: skip
    return p


def _check_args(args) -> tuple[Path, list[str]]:
    """Every option, input and output checked before any work: the output folder and names."""
    if args.annotations and not args.explain:
        raise cli.UserError("--annotations needs --explain")
    if args.config and not args.detectron2:
        raise cli.UserError("--config needs --detectron2")
    if args.detectron2 and args.weights is not None:
        raise cli.UserError("--weights and --detectron2 each name a model; give one of them")
    for option in ("detectron2", "config", "annotations"):
        if getattr(args, option) is not None:
            cli.check_input_file(getattr(args, option), f"--{option}")
    cli.check_weights(args.weights or "shapes")
    cli.check_device(args.device)
    seen: dict[Path, str] = {}
    for path in args.images:
        key = Path(path).resolve()
        if key in seen:
            also = "" if seen[key] == path else f" (also as {seen[key]})"
            raise cli.UserError(f"image {path} is given twice{also}")
        seen[key] = path
        cli.check_input_file(path, "image")
        try:
            with Image.open(path) as pil:
                pil.size  # noqa: B018  (the header only: the pixels are read one image at a time)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise cli.UserError(f"{path} is not an image Pillow can read: {err}") from None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise cli.UserError(f"--out {out}: exists and is not a folder")
    names = output_names(args.images)
    check_outputs(args.images, names, out, args.explain)
    cli.writable_dir(out, "--out")
    return out, names


def main(argv: list[str] | None = None) -> int:
    """``python -m minimask.predict``; exit status 2 and one line for a mistake (``minimask.cli``)."""
    args = _parser().parse_args(argv)
    with cli.user_errors():
        out, names = _check_args(args)
        model, class_names = load_model(args.weights or "shapes", args.device, args.detectron2, args.config)
        for path, name in zip(args.images, names, strict=True):
            if name != Path(path).stem:
                print(f"{path} -> {out / name}.*  (several inputs are named {Path(path).stem})")
        written = []
        if args.explain:  # chapter 10: lineage of each detection; with annotations, misses and false positives
            if args.score is not None:
                model.config = model.config.replace(box_score_thresh=args.score)
            written += explain_images(args.images, out, names, model, class_names, args.annotations, args.device)
        written += predict_files(args.images, out, score=args.score, device=args.device, names=names, model=model,
                                 class_names=class_names)  # fmt: skip
    print(f"wrote {len(written)} files into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

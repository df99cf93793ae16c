"""Chapter 9. COCO box and mask AP of a model on a COCO-format data set, by pycocotools.

``python -m minimask.evaluate --weights shapes --data data/shapes/val`` prints a table of
pycocotools' ``COCOeval`` summary (AP@[.5:.95], AP50, AP75, AP per size, AR) for boxes and
masks and writes it as JSON. AP is never computed by hand: detections are converted to COCO
results (xywh boxes, RLE masks thresholded at ``cfg.mask_threshold``) and handed to COCOeval,
both through ``minimask.coco_eval``, the one bridge to pycocotools.

``paste_ceiling`` measures what the mask paste alone allows: every ground-truth mask squeezed
through the 28x28 mask target and pasted back, scored as a perfect detection.

The command line checks its options, the data set (its files, its images, that it has objects to
score) and ``--out`` before the evaluation starts; a mistake stops it with one line naming the
option or file, exit status 2 (``minimask.cli``). Annotations with an invalid box or polygon are
skipped with a warning naming their ids, and are no object to score.

``--detectron2 model_final.pth [--config config.yaml]`` scores a Detectron2 checkpoint instead
of ``--weights`` (``compat.from_detectron2``, chapter 12); its label k (1..K) is the data set's
k-th category in category-id order, as Detectron2's contiguous ids, so K must be the data set's
number of categories.

``torchrun --nproc_per_node=N -m minimask.evaluate ...`` shares the batches out among N
processes (``minimask.distributed``: gloo on the CPU, NCCL with ``--device cuda``, one GPU per
process); rank 0 gathers every image's results and prints and writes what one process would.
The numbers are bit for bit those of one process run with the same ``--threads``: oneDNN's
convolutions add in an order that depends on the number of threads, so other thread counts
may move a score in its last float32 bit.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from minimask import cli, coco_eval, distributed
from minimask.coco import drop_crowd
from minimask.config import Config
from minimask.data import BATCH_SIZE, runs
from minimask.explain import explain_images, merge_images
from minimask.segmentation import paste_into_original, paste_masks
from minimask.targets import project_masks


def run_results(run, targets: Sequence[dict], dataset, cfg: Config, repaste: bool = False) -> list[dict]:
    """COCO result entries of every image of one ``Run``; with ``repaste``, the masks pasted
    again from the 28x28 probabilities under ``cfg.mask_paste`` (a rule the run was not made with)."""
    results: list[dict] = []
    for j, target in enumerate(targets):
        results += _image_results(run, j, target, dataset, cfg, repaste)
    return results


def _image_results(run, j: int, target: dict, dataset, cfg: Config, repaste: bool) -> list[dict]:
    """COCO result entries of image ``j`` of one ``Run`` (``run_results``)."""
    out = dict(run.detections[j])
    if repaste and run.segmentation is not None:
        seg = run.segmentation[j]
        out["masks"] = paste_into_original(seg.probs, seg.boxes, seg.image_size, seg.original_size, cfg)[1]
    return coco_eval.to_results(out, int(target["image_id"]), dataset.label_to_category_id, cfg.mask_threshold)


def predict_images(
    model: torch.nn.Module,
    dataset,
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
    pastes: Sequence[str] | None = None,
) -> Iterator[tuple[int, dict[str, list[dict]]]]:
    """The per-image part of ``predict_dataset``: ``(index, {rule: COCO result entries})`` for
    each image, in order (one forward per batch, the masks pasted under each ``mask_paste``
    rule of ``pastes``, by default the model's)."""
    rules = {p: model.config.replace(mask_paste=p) for p in (pastes or [model.config.mask_paste])}
    for batch, targets, run in runs(model, dataset, batch_size, progress):
        for j, (i, target) in enumerate(zip(batch, targets, strict=True)):
            yield i, {p: _image_results(run, j, target, dataset, cfg, p != model.config.mask_paste)
                      for p, cfg in rules.items()}  # fmt: skip


def predict_dataset(
    model: torch.nn.Module,
    dataset,
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
    pastes: Sequence[str] | None = None,
) -> list[dict] | dict[str, list[dict]]:
    """Run ``model`` over every image of a ``CocoDataset``; COCO result entries for all.

    ``pastes``: one forward, the masks pasted under each of these ``mask_paste`` rules; then a
    dict rule -> results.
    """
    rules = list(pastes or [model.config.mask_paste])
    out: dict[str, list[dict]] = {p: [] for p in rules}
    for _, per_rule in predict_images(model, dataset, batch_size, progress, rules):
        for p in rules:
            out[p] += per_rule[p]
    return out if pastes is not None else out[model.config.mask_paste]


def evaluate(
    model: torch.nn.Module,
    dataset,
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
    per_class: bool = False,
    pastes: Sequence[str] | None = None,
) -> dict:
    """Box and mask AP of ``model`` on ``dataset`` (a ``minimask.coco.CocoDataset``).

    ``per_class``: also ``report["per_class"][name] = {"bbox": ..., "segm": ...}``, each class
    scored alone by COCOeval (``category_ids``), with its AP per COCO size. ``pastes``: one
    forward, a report per ``mask_paste`` rule (dict rule -> report; the boxes are the same).
    """
    start = time.perf_counter()
    results = predict_dataset(model, dataset, batch_size, progress, pastes=pastes or [model.config.mask_paste])
    seconds = time.perf_counter() - start
    reports = {p: report_of(dataset, res, p, seconds, per_class) for p, res in results.items()}
    return reports if pastes is not None else reports[model.config.mask_paste]


def report_of(dataset, results: list[dict], paste: str, seconds: float, per_class: bool = False) -> dict:
    """``evaluate``'s report of the COCO results of every image of ``dataset`` (in its order),
    pasted under ``paste``; ``seconds``: how long the predictions took."""
    coco_gt, ids = coco_eval.ground_truth(dataset)
    report = {
        "bbox": coco_eval.summary(coco_gt, results, "bbox", ids),
        "segm": coco_eval.summary(coco_gt, results, "segm", ids),
        "images": len(dataset),
        "detections": len(results),
        "seconds": round(seconds, 2),
        "mask_paste": paste,
    }
    if per_class:
        report["per_class"] = {
            dataset.class_names[label]: {
                kind: coco_eval.summary(coco_gt, results, kind, ids, [category_id]) for kind in ("bbox", "segm")
            }
            for label, category_id in sorted(dataset.label_to_category_id.items())
        }
    return report


def paste_ceiling(dataset, cfg: Config, progress: bool = True) -> dict[str, float]:
    """Mask AP of the ground truth itself after the 28x28 target and ``cfg.mask_paste``.

    Every non-crowd ground-truth object (``coco.drop_crowd``) becomes a detection with
    score 1, its exact box, and the mask that a perfect mask head would predict: its own
    28x28 training target on its own box (``targets.project_masks``), pasted back into the
    image. The AP this reaches is the best any model can reach with that paste.
    """

    results = [r for _, image in ceiling_images(dataset, cfg, progress) for r in image]
    coco_gt, ids = coco_eval.ground_truth(dataset)
    return coco_eval.summary(coco_gt, results, "segm", ids)


def ceiling_images(dataset, cfg: Config, progress: bool = True) -> Iterator[tuple[int, list[dict]]]:
    """The per-image part of ``paste_ceiling``: ``(index, COCO result entries)`` for each image."""
    for i in tqdm(range(len(dataset)), desc="ceiling", disable=not progress):
        image, target = dataset[i]
        objects, _ = drop_crowd(target)
        boxes, labels = objects["boxes"], objects["labels"]
        if len(boxes) == 0:
            yield i, []
            continue
        probs = project_masks(objects["masks"], boxes, torch.arange(len(boxes)), 28)
        pasted = paste_masks(probs, boxes, tuple(image.shape[-2:]), cfg)
        out = {"boxes": boxes, "labels": labels, "scores": torch.ones(len(boxes)), "masks": pasted}
        yield i, coco_eval.to_results(out, int(target["image_id"]), dataset.label_to_category_id, cfg.mask_threshold)


def format_table(report: dict) -> str:
    """A plain-text table of the AP numbers, one row per IoU type."""
    head = f"{'':6}" + "".join(f"{n:>7}" for n in coco_eval.STAT_NAMES[:6])
    rows = [head]
    for kind in ("bbox", "segm", "ceiling"):
        if kind in report:
            rows.append(f"{kind:6}" + "".join(f"{report[kind][n]:7.3f}" for n in coco_eval.STAT_NAMES[:6]))
    return "\n".join(rows)


def _parser() -> cli.Parser:
    p = cli.Parser("python -m minimask.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=None, help="'shapes' (the shipped model, the default) or a .safetensors file")
    p.add_argument("--data", default=None, help="COCO directory with annotations.json and images/ "
                   "(default: the committed shapes val split)")  # fmt: skip
    p.add_argument("--paste", choices=["torchvision", "subpixel"], default=None,
                   help="mask paste (default: the one in the weights' config)")  # fmt: skip
    p.add_argument("--ceiling", action="store_true", help="also measure the paste ceiling on the ground truth")
    p.add_argument("--batch-size", type=cli.integer(1), default=8, help="images per forward")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--out", default=None, help="JSON file for the numbers (default: print only)")
    p.add_argument("--threads", type=cli.integer(1), default=None,
                   help="torch CPU threads per process (default: torch's choice; under torchrun, the machine's "
                   "CPUs divided among its processes)")  # fmt: skip
    p.add_argument("--explain", action="store_true",
                   help="also explain every error (chapter 10): misses by stage and reason, false positives by kind")  # fmt: skip
    p.add_argument("--detectron2", metavar="CHECKPOINT", default=None,
                   help="a Detectron2 model_final.pth, model zoo .pkl or their .safetensors instead of --weights (chapter 12); its "
                   "label k is the data set's k-th category in category-id order")  # fmt: skip
    p.add_argument("--config", metavar="YAML", default=None,
                   help="with --detectron2: its config.yaml (default: the model zoo's R50-FPN Mask R-CNN)")  # fmt: skip
    return p


def _checked_dataset(data_dir: Path, warn: bool = True):
    """The ``CocoDataset`` of ``--data``, checked before any work: its files, its images, its
    objects; ``warn``: print the annotations it skips (one line)."""
    from minimask.coco import CocoDataset

    if not data_dir.is_dir():
        raise cli.UserError(f"--data {data_dir}: {'not a folder' if data_dir.exists() else 'no such folder'}")
    ann = data_dir / "annotations.json"
    if not ann.is_file():
        raise cli.UserError(f"--data {data_dir}: no annotations.json there")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        dataset = CocoDataset(ann, data_dir / "images")
    for w in caught if warn else []:  # the annotations it skips (coco.AnnotationTable.skipped_summary), one line
        cli.warn(str(w.message).replace(" See CocoDataset.skipped.", ""))
    if len(dataset) == 0:
        raise cli.UserError(f"{ann}: no images to evaluate on")
    missing = [dataset.images_dir / dataset.image_info(i)["file_name"] for i in range(len(dataset))]
    missing = [m for m in missing if not m.is_file()]
    if missing:
        raise cli.UserError(f"{ann}: {len(missing)} of its {len(dataset)} images are missing, e.g. {missing[0]}")
    objects = sum(1 for anns in dataset.table.annotations.values() for a in anns if not a.get("iscrowd", 0))
    if objects == 0:
        skipped = f", {len(dataset.skipped)} skipped as invalid" if dataset.skipped else ""
        raise cli.UserError(f"{ann}: no objects to score ({len(dataset)} images, 0 usable annotations{skipped}); "
                        "COCO AP is undefined (pycocotools reports -1) without ground truth")  # fmt: skip
    return dataset


def _checked_out(out: str | None) -> Path | None:
    """``--out``: its folder created and writable now; an existing file only if it is a report of ours."""
    if out is None:
        return None
    path = Path(out)
    if path.is_dir():
        raise cli.UserError(f"--out {path}: is a folder; give a file name such as {path / 'report.json'}")
    cli.writable_dir(path.parent, f"--out {path}: its folder")
    if path.exists():
        try:
            ours = {"bbox", "segm"} <= set(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            ours = False
        if not ours:
            raise cli.UserError(f"--out {path}: exists and is not a report of minimask.evaluate; choose another name")
    return path


def _check_model_args(args) -> None:
    """The model options, checked before any work: ``--weights`` (default "shapes") or
    ``--detectron2`` with its optional ``--config`` (as ``minimask.predict``)."""
    if args.config and not args.detectron2:
        raise cli.UserError("--config needs --detectron2")
    if args.detectron2 and args.weights is not None:
        raise cli.UserError("--weights and --detectron2 each name a model; give one of them")
    for option in ("detectron2", "config"):
        if getattr(args, option) is not None:
            cli.check_input_file(getattr(args, option), f"--{option}")
    if args.weights is None:
        args.weights = "shapes" if args.detectron2 is None else None
    if args.weights is not None:
        cli.check_weights(args.weights)


def _load_model(args, device):
    """The model the options name, in eval mode: a Detectron2 checkpoint (chapter 12: its label k
    is the data set's k-th category in category-id order, Detectron2's contiguous ids) or ours."""
    if args.detectron2 is None:
        from minimask.weights import load_pretrained

        return load_pretrained(args.weights, device=device)
    from minimask.compat import from_detectron2

    try:
        return from_detectron2(args.detectron2, args.config).to(device)
    except ValueError as err:
        raise cli.UserError(str(err)) from None


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m minimask.evaluate``; exit status 2 and one line for a mistake (``minimask.cli``).

    Under ``torchrun`` (``minimask.distributed``), every process checks the command first, on
    its own, so that a mistake stops each with its line before any waits for the others; then
    each runs the model on its share of the batches and rank 0 alone prints and writes the
    numbers of the whole data set, the same as one process gives.
    """
    from minimask.data import SHAPES_VAL

    args = _parser().parse_args(list(argv) if argv is not None else None)
    with cli.user_errors():  # every check before the long work; a bad file found during it too
        ctx = distributed.from_env()
        _check_model_args(args)
        cli.check_device(args.device)
        device = distributed.device_for(args.device, ctx)
        out = _checked_out(args.out)
        data_dir = Path(args.data) if args.data else Path(SHAPES_VAL)
        dataset = _checked_dataset(data_dir, warn=ctx is None or ctx.main)
        model = _load_model(args, device)
        if len(dataset.class_names) != model.config.num_classes:  # labels index the data set's categories
            option = f"--detectron2 {args.detectron2}" if args.detectron2 else f"--weights {args.weights}"
            raise cli.UserError(f"{option}: a model of {model.config.num_classes - 1} classes, but "
                                f"{dataset.annotation_file} has {len(dataset.class_names) - 1} categories")  # fmt: skip
        if args.paste:
            model.config = model.config.replace(mask_paste=args.paste)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        if ctx is not None:
            distributed.start(ctx, device, args.threads)
        try:
            report = _run(model, dataset, args, data_dir, ctx)
        finally:
            distributed.stop()
        if report is not None and out is not None:  # rank 0, or the one process
            out.write_text(json.dumps(report, indent=2) + "\n")
            print(f"wrote {out}")
    return 0


def _run(model, dataset, args, data_dir: Path, ctx: distributed.Context | None) -> dict | None:
    """The command's work over ``dataset`` (shared among the processes of ``ctx``); the report,
    printed as it is made, on rank 0 (``None`` on the other ranks)."""
    first = ctx is None or ctx.main  # rank 0, or the one process
    bs, cfg, rule = args.batch_size, model.config, model.config.mask_paste
    start = time.perf_counter()
    images = distributed.map_images(lambda data: predict_images(model, data, bs, first, [rule]), dataset, bs, ctx)
    report = None
    if first:
        report = report_of(dataset, [r for im in images for r in im[rule]], rule, time.perf_counter() - start)
        report["weights"] = str(args.weights if args.detectron2 is None else args.detectron2)
        report["data"] = str(data_dir)
    if args.ceiling:
        images = distributed.map_images(lambda data: ceiling_images(data, cfg, first), dataset, bs, ctx)
        if first:
            coco_gt, ids = coco_eval.ground_truth(dataset)
            report["ceiling"] = coco_eval.summary(coco_gt, [r for im in images for r in im], "segm", ids)
    if first:
        print(format_table(report))
        undefined = any(v == -1 for kind in ("bbox", "segm") for v in report[kind].values())
        print(f"{report['images']} images, {report['detections']} detections, {report['seconds']} s, "
              f"paste={report['mask_paste']}" + ("; -1: no object of that size to score" if undefined else ""))  # fmt: skip
    if args.explain:  # chapter 10: the errors behind the AP, with the decision that made each
        start = time.perf_counter()
        records = distributed.map_images(lambda data: explain_images(model, data, bs, first), dataset, bs, ctx)
        if first:
            explained = merge_images(records, dataset, start=start)
            print(explained.format())
            report["explain"] = explained.to_json()
    return report


if __name__ == "__main__":
    sys.exit(main())

"""Chapter 9. Train minimask on the shapes data set (or any COCO-format data), on CPU or GPU.

``python -m minimask.train --config shapes --out runs/shapes`` generates the train split if it
is missing, trains with AdamW (linear warm-up, then cosine decay), shows a progress bar with
the running losses, writes a checkpoint it can resume from (``--resume``), a loss log
(``loss_log.jsonl``, one line per iteration, plotted by chapter 9) and, at the end,
``model.safetensors`` with the config in its metadata (``minimask.load_pretrained(path)``).

Reproducible: the batch of every iteration, its flips and the model's own sampling come from
seeded generators, so the same command gives the same weights (up to float noise), and a
resumed run continues exactly where the checkpoint stopped. Under ``torchrun`` it trains with
DistributedDataParallel (gloo on CPU, nccl on CUDA); each process takes its own share of
every iteration's samples.

The command line checks every option, ``--out`` and ``--train-dir`` before it generates the train
split or builds the model; a mistake stops it with one line naming the option or file, exit
status 2 (``minimask.cli``). The train split is generated only into a new or empty folder, and
the command says so first.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from minimask import cli
from minimask.config import Config

PRESETS = {"shapes": Config.shapes, "torchvision_r50": Config.torchvision_r50}
DEFAULT_TRAIN_DIR = Path(__file__).resolve().parents[2] / "data" / "shapes" / "train"
DEFAULT_TRAIN_IMAGES = 8000
TRAIN_SEED = 1  # the committed val split uses seed 0; train images must differ from val images


@dataclass(frozen=True)
class TrainSettings:
    """Everything the loop needs besides the model's Config (written to ``settings.json``)."""

    iterations: int = 2500
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 100
    grad_clip: float = 10.0
    hflip: float = 0.5
    seed: int = 0
    checkpoint_every: int = 200

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup < 0 or not 0 <= self.hflip <= 1:
            raise ValueError(f"invalid settings: lr={self.lr}, warmup={self.warmup}, hflip={self.hflip}")


def learning_rate(it: int, s: TrainSettings) -> float:
    """Linear warm-up from lr/1000 over ``warmup`` iterations, then cosine decay to 0."""
    if it < s.warmup:
        return s.lr * (0.001 + 0.999 * it / s.warmup)
    progress = (it - s.warmup) / max(1, s.iterations - s.warmup)
    return s.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def batch_indices(it: int, s: TrainSettings, n: int, rank: int = 0, world: int = 1) -> list[int]:
    """Dataset indices of one process's share of iteration ``it``.

    The data are a stream of epochs, each a permutation seeded by (seed, epoch); iteration
    ``it`` takes the next ``batch_size * world`` positions of that stream. Any iteration's batch
    can be recomputed from scratch, which is what makes ``--resume`` exact.
    """
    out = []
    for j in range(s.batch_size):
        pos = (it * world + rank) * s.batch_size + j
        epoch, k = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(s.seed * 100_003 + epoch))
        out.append(int(perm[k]))
    return out


def hflip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Mirror an image and its target left-right (boxes, masks)."""
    w = image.shape[-1]
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, 0], boxes[:, 2] = w - target["boxes"][:, 2], w - target["boxes"][:, 0]
    target["boxes"] = boxes
    target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


def load_batch(dataset, indices: list[int], it: int, s: TrainSettings, rank: int = 0) -> tuple[list, list]:
    """Images and targets (crowd regions removed) with seeded flips."""
    from minimask.coco import drop_crowd

    g = torch.Generator().manual_seed(s.seed * 7919 + it * 131 + rank)
    flips = torch.rand(len(indices), generator=g) < s.hflip
    images, targets = [], []
    for i, flip in zip(indices, flips.tolist(), strict=True):
        image, target = dataset[i]
        target, _ = drop_crowd(target)
        if flip:
            image, target = hflip(image, target)
        images.append(image)
        targets.append({k: target[k] for k in ("boxes", "labels", "masks")})
    return images, targets


def _train_split_plan(train_dir: Path, n: int | None) -> int:
    """How many images ``_ensure_train_split`` will generate into ``train_dir`` (0: the split is
    there and is used as it is). Raises, naming the folder, for a split that does not hold ``n``
    images or misses image files, and for a folder that holds other files."""
    if train_dir.exists() and not train_dir.is_dir():
        raise NotADirectoryError(f"--train-dir {train_dir}: exists and is not a folder")
    ann = train_dir / "annotations.json"
    if ann.is_file():  # read and checked in full by the training's CocoDataset; here what is quick
        try:
            names = [str(image["file_name"]) for image in json.loads(ann.read_text(encoding="utf-8"))["images"]]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{ann}: not a COCO file with a list of 'images' ({type(err).__name__}: {err})") from None
        have = len(names)
        if n is not None and have != n:
            raise ValueError(f"--train-dir {train_dir} holds {have} images but --train-images is {n}: pass "
                             f"--train-images {have} or remove the directory to regenerate it")  # fmt: skip
        missing = [name for name in names if not (train_dir / "images" / name).is_file()]
        if missing:
            raise FileNotFoundError(f"--train-dir {train_dir}: {len(missing)} of its {have} images are missing "
                                    f"from images/, e.g. {missing[0]}")  # fmt: skip
        return 0
    if train_dir.exists() and any(train_dir.iterdir()):
        raise FileExistsError(f"--train-dir {train_dir}: exists, is not empty and has no annotations.json; the "
                              "shapes train split is generated only into a new or empty folder: remove it or pass "
                              "another --train-dir")  # fmt: skip
    return DEFAULT_TRAIN_IMAGES if n is None else n


def _ensure_train_split(train_dir: Path, n: int | None, seed: int, progress: bool = True) -> None:
    """Generate the shapes train split (``n`` images, default 8000) unless it is there, saying so,
    with a progress bar; an existing split must hold ``n`` images when ``n`` is given. Never into
    a folder that holds other files (``_train_split_plan``)."""
    from minimask.data import make_shapes

    count = _train_split_plan(Path(train_dir), n)
    if count:
        print(f"the train split is missing: generating {count} shapes images into {train_dir} (seed {seed})",
              flush=True)  # fmt: skip
        make_shapes(train_dir, "train", count, seed, progress=progress)


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("MINIMASK_DEVICE", "") == "cuda" else "gloo"
        dist.init_process_group(backend)
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def train(
    cfg: Config,
    out: Path,
    settings: TrainSettings,
    train_dir: Path = DEFAULT_TRAIN_DIR,
    n_train: int | None = None,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train and return the path of ``model.safetensors``. See the module docstring."""
    from torch.nn.parallel import DistributedDataParallel

    from minimask.model import MaskRCNN

    if device == "cuda":
        os.environ["MINIMASK_DEVICE"] = "cuda"
    rank, world = _distributed()
    if device == "cuda" and world > 1:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    out = Path(out)
    dataset = _open_run(out, Path(train_dir), n_train, resume, rank, world)
    torch.manual_seed(settings.seed)
    model = MaskRCNN(cfg).to(device).train()
    if device == "cpu":  # oneDNN's convolutions run about 12 % faster on NHWC tensors (equal up to rounding)
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    start = _restore(out, model, optimizer, settings, resume, rank, world)
    net = DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    if rank == 0:
        (out / "settings.json").write_text(json.dumps({"config": cfg.to_dict(), "settings": settings.__dict__,
                                                       "train_dir": str(train_dir), "world_size": world}, indent=1))  # fmt: skip
    log = open(out / "loss_log.jsonl", "a") if rank == 0 else None  # noqa: SIM115
    bar = tqdm(range(start, settings.iterations), initial=start, total=settings.iterations, desc="train",
               disable=not progress or rank != 0, dynamic_ncols=True)  # fmt: skip
    t0, running = time.perf_counter(), {}
    # Denormal floats (|x| < 1e-38) are orders of magnitude slower on x86 CPUs, and a training
    # network accumulates them; flushing them to zero changes no result we report. The switch is
    # process-wide, so it is turned back off (torch's default) when training ends.
    torch.set_flush_denormal(True)
    try:
        for it in bar:
            lr, total, values = _step(net, model, optimizer, dataset, it, settings, device, rank, world)
            running = {k: 0.9 * running.get(k, v) + 0.1 * v for k, v in values.items()}
            if rank == 0:
                bar.set_postfix(loss=f"{sum(running.values()):.3f}", mask=f"{running.get('loss_mask', 0):.3f}")
                log.write(json.dumps({"iteration": it, "lr": lr, "loss": total, **values,
                                      "seconds": round(time.perf_counter() - t0, 2)}) + "\n")  # fmt: skip
            if (it + 1) % settings.checkpoint_every == 0 or it + 1 == settings.iterations:
                _save_checkpoint(out / "checkpoint.pt", model, optimizer, it + 1, rank, world)
                if log:
                    log.flush()
    finally:
        torch.set_flush_denormal(False)
        if log:
            log.close()
    return _finish(model, out, settings, time.perf_counter() - t0, device, len(dataset), rank, world)


def _open_run(out: Path, train_dir: Path, n_train: int | None, resume: bool, rank: int, world: int):
    """The train split's ``CocoDataset``; first (rank 0) ``out`` made, a finished run there refused
    unless ``resume``, and the train split generated if missing."""
    from minimask.data import CocoDataset

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if not resume and (out / "loss_log.jsonl").exists():
            raise FileExistsError(f"{out} already holds a run (loss_log.jsonl); pass --resume to continue it "
                                  "or choose another --out")  # fmt: skip
        _ensure_train_split(train_dir, n_train, TRAIN_SEED)
    if world > 1:
        dist.barrier()
    return CocoDataset(train_dir / "annotations.json", train_dir / "images")


def _restore(out: Path, model, optimizer, settings: TrainSettings, resume: bool, rank: int, world: int) -> int:
    """The first iteration to run: with ``resume``, the checkpoint's, its weights, optimizer and
    random state restored (and the log cut there); else 0, the model's samplers seeded."""
    checkpoint = out / "checkpoint.pt"
    if not resume:
        torch.manual_seed(settings.seed * 31 + rank)  # the model's own samplers draw from here
        return 0
    if not checkpoint.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint}")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    start = int(state["iteration"])
    if rank == 0:  # forget log lines written after the checkpoint: they will be run again
        _truncate_log(out / "loss_log.jsonl", start)
    torch.set_rng_state(state["rng"][rank] if world > 1 else state["rng"][0])
    return start


def _step(net, model, optimizer, dataset, it: int, settings: TrainSettings, device: str, rank: int, world: int):
    """One iteration: its learning rate, batch, losses, clipped gradient step. Returns the
    learning rate, the total loss and each loss (floats)."""
    lr = learning_rate(it, settings)
    for group in optimizer.param_groups:
        group["lr"] = lr
    images, targets = load_batch(dataset, batch_indices(it, settings, len(dataset), rank, world), it, settings, rank)
    images = [im.to(device) for im in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    losses = net(images, targets)
    total = sum(losses.values())
    if not torch.isfinite(total):
        raise FloatingPointError(
            f"iteration {it}: loss is {total.item()} ({ {k: v.item() for k, v in losses.items()} })"
        )
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
    optimizer.step()
    return lr, float(total.detach()), {k: float(v.detach()) for k, v in losses.items()}


def _finish(model, out: Path, settings: TrainSettings, seconds: float, device: str, images: int, rank: int,
            world: int) -> Path:  # fmt: skip
    """``model.safetensors`` written (rank 0) with how it was trained; the process group closed."""
    from minimask.weights import save_weights

    path = out / "model.safetensors"
    if rank == 0:
        minutes = seconds / 60
        save_weights(model.eval(), path, training={"iterations": settings.iterations, "batch_size": settings.batch_size,
                                                   "world_size": world, "minutes": round(minutes, 2),
                                                   "device": device, "images": images})  # fmt: skip
        print(f"wrote {path} after {minutes:.1f} min", flush=True)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return path


def _truncate_log(path: Path, start: int) -> None:
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["iteration"] < start]
        path.write_text("".join(ln + "\n" for ln in lines))


def _save_checkpoint(path: Path, model, optimizer, iteration: int, rank: int, world: int) -> None:
    rng = torch.get_rng_state()
    if world > 1:
        gathered = [torch.empty_like(rng) for _ in range(world)]
        dist.all_gather(gathered, rng)
    else:
        gathered = [rng]
    if rank == 0:
        tmp = path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration,
                    "rng": gathered}, tmp)  # fmt: skip
        tmp.replace(path)


# The help and the check of each TrainSettings field on the command line (minimask.cli's types).
_SETTING_HELP = {
    "iterations": ("training iterations (batches)", cli.integer(1)),
    "batch_size": ("images per iteration and process (torchrun: each process takes its own)", cli.integer(1)),
    "lr": ("peak learning rate of AdamW", cli.number(0.0, low_open=True)),
    "weight_decay": ("AdamW weight decay", cli.number(0.0)),
    "warmup": ("iterations of linear warm-up", cli.integer(0)),
    "grad_clip": ("gradient norm clip", cli.number(0.0, low_open=True)),
    "hflip": ("probability of a left-right flip", cli.number(0.0, 1.0)),
    "seed": ("seed of the batches, flips and samplers", cli.integer(0)),
    "checkpoint_every": ("iterations between checkpoints", cli.integer(1)),
}


def _parser() -> cli.Parser:
    p = cli.Parser("python -m minimask.train", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="shapes", help=f"a preset ({', '.join(PRESETS)}) or a JSON file of Config fields")  # fmt: skip
    p.add_argument("--out", required=True, help="run directory: checkpoint, loss log, model.safetensors")
    p.add_argument("--train-dir", default=str(DEFAULT_TRAIN_DIR),
                   help="COCO train split; the shapes train split is generated there when it is missing")  # fmt: skip
    p.add_argument("--train-images", type=cli.integer(1), default=None,
                   help=f"images to generate if the split is missing (default: {DEFAULT_TRAIN_IMAGES})")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--threads", type=cli.integer(1), default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    for f, default in TrainSettings.__dataclass_fields__.items():
        text, kind = _SETTING_HELP.get(f, (f"TrainSettings.{f}", type(default.default)))
        p.add_argument(f"--{f.replace('_', '-')}", type=kind, default=default.default, help=text)
    return p


def _config(value: str) -> Config:
    """``--config``: a preset's ``Config`` or one read from a JSON file; errors name the file and field."""
    if value in PRESETS:
        return PRESETS[value]()
    path = Path(value)
    if not path.is_file():
        raise cli.UserError(f"--config {value}: neither a preset ({', '.join(PRESETS)}) nor a JSON file"
                            + cli.did_you_mean(value, PRESETS))  # fmt: skip
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise cli.UserError(f"--config {path}: not valid JSON ({err})") from None
    if not isinstance(values, dict):
        raise cli.UserError(f"--config {path}: must be a JSON object of Config fields")
    fields = Config.__dataclass_fields__
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise cli.UserError(f"--config {path}: unknown Config field {unknown[0]}{cli.did_you_mean(unknown[0], fields)}")
    try:
        return Config.from_dict(values)
    except (ValueError, TypeError) as err:
        raise cli.UserError(f"--config {path}: {err}") from None


def _check_out(out: Path, resume: bool) -> None:
    """``--out`` before any work: not a file, a run only with ``--resume``, which needs its checkpoint."""
    if out.exists() and not out.is_dir():
        raise cli.UserError(f"--out {out}: exists and is not a folder")
    if resume and not (out / "checkpoint.pt").is_file():
        raise cli.UserError(f"--resume: no checkpoint at {out / 'checkpoint.pt'} (start without --resume)")
    if not resume and (out / "loss_log.jsonl").exists():
        raise cli.UserError(f"--out {out}: already holds a run (loss_log.jsonl); pass --resume to continue it "
                            "or choose another --out")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m minimask.train``; exit status 2 and one line for a mistake (``minimask.cli``), all
    found before the train split is generated or the model built."""
    args = _parser().parse_args(argv)
    with cli.user_errors():
        cfg = _config(args.config)
        settings = TrainSettings(**{f: getattr(args, f) for f in TrainSettings.__dataclass_fields__})
        cli.check_device(args.device)
        _check_out(Path(args.out), args.resume)
        to_generate = _train_split_plan(Path(args.train_dir), args.train_images)
        cli.writable_dir(Path(args.out), "--out")  # created last: a refused run leaves nothing behind
    if to_generate and int(os.environ.get("RANK", "0")) == 0:
        print(f"note: --train-dir {args.train_dir} has no train split; {to_generate} images will be generated "
              "there first", flush=True)  # fmt: skip
    if args.threads:
        torch.set_num_threads(args.threads)
    with cli.user_errors():  # a bad file of the split found during the run: one line too
        train(cfg, Path(args.out), settings, Path(args.train_dir), args.train_images, args.device, args.resume,
              progress=not args.no_progress)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

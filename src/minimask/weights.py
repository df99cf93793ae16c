"""Chapter 9. Saving and loading minimask weights as safetensors, with the Config inside.

A weights file is a plain safetensors file (no pickle) whose metadata holds
``format = "minimask"`` and the model's ``Config`` as JSON, so a file alone rebuilds the model
that decides exactly as the trained one did. ``load_pretrained("shapes")`` reads the model
shipped in ``data/``; nothing is ever downloaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from minimask.config import Config

FORMAT = "minimask"
DATA_DIR = Path(__file__).resolve().parents[2] / "data"
SHIPPED = {"shapes": DATA_DIR / "weights" / "shapes.safetensors"}


def save_weights(model: torch.nn.Module, path: str | Path, **metadata: Any) -> Path:
    """Write ``model``'s state dict and config to ``path``; extra metadata is stored as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": json.dumps(model.config.to_dict())}
    meta.update({k: json.dumps(v) for k, v in metadata.items()})
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)  # never leave a half-written file under the final name
    return path


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], Config, dict[str, Any]]:
    """(state dict, Config, other metadata) of a minimask safetensors file, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from err
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ValueError(
            f"{path} is a safetensors file but not a minimask weights file: its metadata has no "
            f"format='minimask' and config (found keys: {sorted(meta)}). For torchvision weights use "
            "minimask.compat.from_torchvision."
        )
    try:
        cfg = Config.from_dict(json.loads(meta["config"]))
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: the config stored in its metadata is invalid: {err}") from err
    extra = {k: json.loads(v) for k, v in meta.items() if k not in ("format", "config")}
    return state, cfg, extra


def check_state_dict(module: nn.Module, state_dict: Mapping[str, Tensor], source: str = "state dict") -> None:
    """Chapter 9. Raise ``ValueError`` if ``state_dict`` does not fit ``module`` exactly.

    The message starts with ``source`` (a file name, say) and lists each kind of problem:
    missing keys, unexpected keys, shape mismatches (given and expected shape), each with
    its count and its first 10 keys. ``num_batches_tracked`` of a ``FrozenBatchNorm2d`` is
    ignored, as that module's loader ignores it. Used for every state dict minimask loads:
    weights files (``load_pretrained``) and torchvision's (``compat.from_torchvision``).
    """
    expected = module.state_dict()
    frozen = {name for name, m in module.named_modules() if isinstance(m, FrozenBatchNorm2d)}
    given = {k: v for k, v in state_dict.items() if not _frozen_counter(k, frozen)}
    parts = fit_problems(expected, given)
    if parts:
        raise ValueError(f"{source} does not fit {type(module).__name__}: " + "; ".join(parts))


def fit_problems(expected: Mapping[str, Tensor], given: Mapping[str, Tensor], limit: int | None = 10) -> list[str]:
    """Chapter 9. What keeps ``given`` from fitting ``expected``, one line per kind of problem.

    Missing keys, unexpected keys and shape mismatches (given and expected shape), each with
    its count and its first ``limit`` keys (all with ``limit=None``); [] when it fits.
    """
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k}: {tuple(given[k].shape)} given, {tuple(expected[k].shape)} expected"
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if keys:
            shown = keys if limit is None else keys[:limit]
            more = f" ... and {len(keys) - len(shown)} more" if len(keys) > len(shown) else ""
            parts.append(f"{len(keys)} {what}: " + ", ".join(shown) + more)
    return parts


def _frozen_counter(key: str, frozen: set[str]) -> bool:
    prefix, _, leaf = key.rpartition(".")
    return leaf == "num_batches_tracked" and prefix in frozen


def load_pretrained(name_or_path: str | Path = "shapes", device: str | torch.device = "cpu") -> torch.nn.Module:
    """Chapter 9. A ``MaskRCNN`` in eval mode with weights from ``data/`` or a file.

    ``"shapes"`` is the model shipped with the book (trained on the shapes data on a CPU);
    a path loads a file written by ``python -m minimask.train``. Missing, truncated or foreign
    files raise an error that names the file; a state dict that does not fit the config's
    model raises ``check_state_dict``'s error (missing, unexpected and mis-shaped keys).
    """
    from minimask.model import MaskRCNN

    path = SHIPPED.get(str(name_or_path), Path(name_or_path))
    if str(name_or_path) in SHIPPED and not path.is_file():
        raise FileNotFoundError(f"the shipped '{name_or_path}' weights are missing: expected {path}")
    state, cfg, extra = read_weights(path)
    model = MaskRCNN(cfg)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    model.metadata = extra
    return model.to(device).eval()

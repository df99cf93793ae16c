"""python -m minimask.train: the loss goes down, resume is exact, the file loads, torchrun works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minimask import Config
from minimask import train as train_mod
from minimask.data import make_shapes
from minimask.train import TrainSettings, train
from minimask.weights import load_pretrained, read_weights

# a quick model: the shapes preset with fewer proposals and sampled RoIs
CFG = Config.shapes().replace(rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100, box_batch_size_per_image=32)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("data") / "train", "train", 4, seed=5)


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "loss_log.jsonl").read_text().splitlines()]


def test_smoke_loss_goes_down_and_weights_load(tiny_data, tmp_path):
    """Overfitting two fixed images for 16 steps: the last losses are well below the first."""
    s = TrainSettings(iterations=16, batch_size=2, lr=2e-3, warmup=0, hflip=0.0, checkpoint_every=100)
    path = train(CFG, tmp_path / "run", s, tiny_data, n_train=4, progress=False)
    losses = _losses(tmp_path / "run")
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < 0.75 * sum(losses[:4]) / 4, losses
    model = load_pretrained(path)
    assert model.config == CFG and not model.training
    assert model.metadata["training"]["iterations"] == 16
    # training flushes denormals to zero while it runs (a process-wide switch) and turns that off
    # again: a later test in the same process must still see IEEE subnormals
    assert float(torch.tensor(1e-39) * 1.0) != 0.0
    out = model([torch.rand(3, 150, 190)])[0]
    assert set(out) == {"boxes", "labels", "scores", "masks"} and out["masks"].shape[-2:] == (150, 190)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(CFG, tmp_path / "run", s, tiny_data, progress=False)


def test_resume_continues_exactly(tiny_data, tmp_path, monkeypatch):
    """A run stopped after its checkpoint at step 3 and resumed ends with the same weights as an
    uninterrupted run (batches, flips and the samplers' RNG all restored)."""
    s = TrainSettings(iterations=6, batch_size=2, lr=1e-3, warmup=2, hflip=0.5, checkpoint_every=3)
    straight, _, _ = read_weights(train(CFG, tmp_path / "a", s, tiny_data, progress=False))

    real = train_mod.load_batch

    def crash_at_4(dataset, indices, it, settings, rank=0):
        if it == 4:
            raise KeyboardInterrupt("simulated stop")
        return real(dataset, indices, it, settings, rank)

    monkeypatch.setattr(train_mod, "load_batch", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        train(CFG, tmp_path / "b", s, tiny_data, progress=False)
    monkeypatch.setattr(train_mod, "load_batch", real)
    assert not (tmp_path / "b" / "model.safetensors").exists()
    resumed, _, _ = read_weights(train(CFG, tmp_path / "b", s, tiny_data, resume=True, progress=False))
    for k, v in straight.items():
        torch.testing.assert_close(resumed[k], v, rtol=0, atol=0, msg=k)
    lines = (tmp_path / "b" / "loss_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == list(range(6)), "step 3 is logged once"


def test_torchrun_two_cpu_processes(tiny_data, tmp_path):
    """DistributedDataParallel on the gloo backend with 2 CPU processes trains and writes the file."""
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(CFG.to_dict()))
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "minimask.train", "--config", str(cfg_file),
           "--out", str(tmp_path / "ddp"), "--train-dir", str(tiny_data), "--iterations", "2", "--batch-size", "1",
           "--no-progress", "--threads", "1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    state, cfg, extra = read_weights(tmp_path / "ddp" / "model.safetensors")
    assert cfg == CFG and extra["training"]["world_size"] == 2
    assert all(torch.isfinite(v.float()).all() for v in state.values())


def test_cli_errors(tmp_path):
    """Bad arguments stop with a message naming what is wrong."""
    done = subprocess.run([sys.executable, "-m", "minimask.train", "--config", "nonsense", "--out", str(tmp_path)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "nonsense" in done.stderr

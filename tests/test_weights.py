"""Weights files: round trip with the config inside; clear errors for missing, truncated, foreign files."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from minimask import Config
from minimask.weights import read_weights, save_weights


class Tiny(torch.nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.config = cfg
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)  # an int64 buffer (num_batches_tracked) too


def test_round_trip_keeps_tensors_config_and_metadata(tmp_path):
    """What is written is read back bit for bit, with the Config and extra metadata."""
    cfg = Config.shapes().replace(box_score_thresh=0.3)
    model = Tiny(cfg)
    path = save_weights(model, tmp_path / "sub" / "w.safetensors", training={"iterations": 5})
    state, cfg2, extra = read_weights(path)
    assert cfg2 == cfg
    assert extra == {"training": {"iterations": 5}}
    assert state.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v) and state[k].dtype == v.dtype, k
    assert not list(tmp_path.glob("sub/*.tmp")), "no temporary file left behind"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        read_weights(tmp_path / "nope.safetensors")


def test_truncated_file_is_named(tmp_path):
    path = save_weights(Tiny(Config.shapes()), tmp_path / "w.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"w\.safetensors is not a readable safetensors file"):
        read_weights(path)


def test_foreign_safetensors_and_non_safetensors_files(tmp_path):
    foreign = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="other.safetensors is a safetensors file but not a minimask"):
        read_weights(foreign)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, I am not a weights file")
    with pytest.raises(ValueError, match="notes.safetensors is not a readable safetensors file"):
        read_weights(text)


def test_bad_config_in_metadata_is_reported(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "minimask", "config": '{"box_nms_thresh": 7}'})
    with pytest.raises(ValueError, match=r"bad.safetensors: the config .* invalid.*box_nms_thresh"):
        read_weights(path)

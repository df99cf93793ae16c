"""Weights files: round trip with the config inside; clear errors for missing, truncated, foreign files."""

from __future__ import annotations

import json

import pytest
import torch
from helpers_compare import same_outputs
from safetensors.torch import save_file

from minimask import Config, MaskRCNN, compat
from minimask.weights import check_state_dict, load_pretrained, read_weights, save_weights


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


def test_load_pretrained_gives_the_saved_model(tmp_path):
    """Oracle: the model that was saved, run on the same images (outputs equal exactly)."""
    torch.manual_seed(0)
    cfg = Config.shapes().replace(box_score_thresh=0.0)
    model = MaskRCNN(cfg).eval()
    loaded = load_pretrained(save_weights(model, tmp_path / "w.safetensors", training={"iterations": 1}))
    assert loaded.config == cfg and loaded.metadata == {"training": {"iterations": 1}} and not loaded.training
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 96, 128, generator=g), torch.rand(3, 120, 80, generator=g)]
    with torch.no_grad():
        ours, theirs = model(images), loaded(images)
    assert sum(len(o["boxes"]) for o in ours) > 0
    assert same_outputs(ours, theirs) == dict.fromkeys(
        ("boxes", "scores", "labels_differ", "mask_pixels_differ", "count_differs"), 0.0
    )


def test_load_pretrained_names_every_kind_of_misfit(tmp_path):
    """One state-dict check for files and torchvision's models: missing, unexpected and
    mis-shaped keys are each named, with the file."""
    assert compat.check_state_dict is check_state_dict
    model = MaskRCNN(Config.shapes())
    path = save_weights(model, tmp_path / "w.safetensors")
    state, cfg, _ = read_weights(path)
    state.pop("roi_heads.box_head.fc6.bias")
    state["extra.weight"] = torch.zeros(1)
    state["roi_heads.box_predictor.cls_score.bias"] = torch.zeros(9)
    save_file(state, str(path), metadata={"format": "minimask", "config": json.dumps(cfg.to_dict())})
    with pytest.raises(ValueError) as caught:
        load_pretrained(path)
    message = str(caught.value)
    assert message.startswith(f"{path} does not fit MaskRCNN: ")
    assert "1 missing keys: roi_heads.box_head.fc6.bias" in message
    assert "1 unexpected keys: extra.weight" in message
    assert "1 shape mismatches: roi_heads.box_predictor.cls_score.bias: (9,) given, (7,) expected" in message

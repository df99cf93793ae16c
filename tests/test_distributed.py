"""minimask.distributed: ``torchrun -m minimask.evaluate`` shares the batches out among its
processes and rank 0 prints and writes exactly what one process does."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from minimask import cli
from minimask.coco import CocoDataset
from minimask.distributed import Context, Shard, from_env, merge, shard_indices
from minimask.shapes import make_shapes


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    """Five shapes images: with two images a batch, three batches, two for rank 0 (the last,
    short one among them) and one for rank 1."""
    return make_shapes(tmp_path_factory.mktemp("five"), "val", 5, seed=3)


@pytest.mark.parametrize("n", [0, 1, 5, 6, 7, 17])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 8])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shards_are_the_one_process_batches(n, batch_size, world):
    """Every image in exactly one shard, and each shard, batched again, makes batches of the
    one-process pass (the same images together, so the same padding)."""
    one = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    shards = [shard_indices(n, batch_size, r, world) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    for r, s in enumerate(shards):
        again = [s[i : i + batch_size] for i in range(0, len(s), batch_size)]
        assert again == one[r::world], (r, s)


def test_merge_restores_the_data_set_order():
    """Records gathered by rank come back in index order; a missing or repeated index is an error."""
    n, bs, world = 7, 2, 3
    parts = [[(i, f"image {i}") for i in shard_indices(n, bs, r, world)] for r in range(world)]
    assert [i for i, _ in parts[0]] == [0, 1, 6] and [i for i, _ in parts[1]] == [2, 3]
    assert merge(parts, n) == [f"image {i}" for i in range(n)]
    with pytest.raises(ValueError, match="distinct"):
        merge(parts[:2], n)
    with pytest.raises(ValueError, match="distinct"):
        merge([*parts, parts[1]], n)


def test_shard_is_a_view_of_its_images(five):
    data = CocoDataset(five / "annotations.json", five / "images")
    shard = Shard(data, [4, 0])
    assert len(shard) == 2 and shard.class_names == data.class_names
    assert shard.label_to_category_id == data.label_to_category_id
    assert int(shard[0][1]["image_id"]) == data.ids[4] and int(shard[1][1]["image_id"]) == data.ids[0]
    assert shard.annotations(0) == data.annotations(4) and shard.image_info(1) == data.image_info(0)
    assert shard.load_image(0).shape == data[4][0].shape


def test_from_env():
    assert from_env({}) is None
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "h",
           "MASTER_PORT": "1"}  # fmt: skip
    assert from_env(env) == Context(rank=3, world=4, local_rank=1, local_world=2)
    assert not from_env(env).main and from_env({**env, "RANK": "0"}).main
    with pytest.raises(cli.UserError, match="MASTER_ADDR"):
        from_env({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(cli.UserError, match="not a process"):
        from_env({**env, "RANK": "4"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_mistake_stops_a_rank_before_it_waits_for_the_others(tmp_path):
    """Rank 1 of 2 alone, its peer never started: a bad --data is its one line and status 2,
    at once (the checks come before the process group, which would wait for rank 0)."""
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "minimask.evaluate", "--explain", "--data", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"error: --data {tmp_path / 'nowhere'}: no such folder"]


def _without_seconds(text: str) -> str:
    """A report's text with its times (``"seconds": 1.23``) blanked."""
    return re.sub(r'"seconds": [0-9.]+', '"seconds": -', text)


def test_torchrun_gives_the_numbers_of_one_process(five, tmp_path):
    """Two processes under torchrun, one process: the same JSON (COCOeval's AP, the paste
    ceiling, every miss and false positive with its score) and the same printed report, bit
    for bit, given the same torch threads per process; rank 1 prints nothing."""
    args = ["-m", "minimask.evaluate", "--data", str(five), "--batch-size", "2", "--threads", "1", "--explain",
            "--ceiling"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one.json")],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = subprocess.run([*torchrun, *args, "--out", str(tmp_path / "two.json")],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert two.returncode == 0, two.stderr

    a, b = ((tmp_path / f"{k}.json").read_text() for k in ("one", "two"))
    report = json.loads(a)
    assert report["images"] == 5 and report["explain"]["miss_list"] and report["explain"]["false_positive_list"]
    assert "ceiling" in report and a.count('"seconds"') == 2
    assert _without_seconds(a) == _without_seconds(b)

    def shown(text: str) -> str:  # the time and the file name are all that may differ
        return re.sub(r"detections, [0-9.]+ s,", "detections, - s,", text).replace("two.json", "one.json")

    assert shown(two.stdout) == shown(one.stdout)
    assert two.stdout.count("wrote ") == 1 and two.stdout.count("missed objects:") == 1
    assert "| 0/1 [" not in two.stderr, "rank 1 (one batch) shows no progress bar"
    assert "| 0/2 [" in two.stderr, "rank 0 (two batches) shows its progress"

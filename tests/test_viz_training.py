"""The training figure of chapter 9 (minimask.viz.loss_curves), drawn from the shipped loss log."""

import json

import matplotlib.pyplot as plt
import numpy as np

from minimask import viz
from minimask.weights import SHIPPED

NAMES = ["loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"]


def test_loss_curves_draws_one_line_per_loss_from_the_log():
    text = SHIPPED["shapes"].with_name("shapes_loss_log.jsonl").read_text()
    log = [json.loads(line) for line in text.splitlines()][:50]
    fig = viz.loss_curves(log, NAMES, title="five losses")
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == len(NAMES)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == NAMES
    for line, name in zip(lines, NAMES, strict=True):
        np.testing.assert_array_equal(line.get_xdata(), [row["iteration"] for row in log])
        np.testing.assert_array_equal(line.get_ydata(), [row[name] for row in log])
    assert len({line.get_color() for line in lines}) == len(NAMES)
    assert ax.get_yscale() == "log"
    assert ax.get_title() == "five losses"
    plt.close(fig)

"""The shared drawing helpers: labels that never cover each other, text that reads on its
background, table cells that break only between words of a code name, a class legend."""

import matplotlib.pyplot as plt

from minimask import viz
from minimask.viz._draw import box_tag, ink


def test_a_tag_that_would_cover_another_is_left_out():
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.set_xlim(0, 100)
    ax.set_ylim(100, 0)
    assert box_tag(ax, (10, 20, 30, 40), "circle 0.91", "#0072B2")
    assert not box_tag(ax, (12, 21, 30, 40), "square 0.40", "#E69F00"), "drawn over the first"
    assert box_tag(ax, (10, 80, 30, 95), "ring 0.70", "#F0E442"), "far below: no overlap"
    assert [t.get_text() for t in ax.texts] == ["circle 0.91", "ring 0.70"]
    assert box_tag(ax, (12, 21, 30, 40), "cross 0.30", "#009E73", clear=False), "asked to draw anyway"
    assert len(ax.texts) == 3
    plt.close(fig)


def test_ink_is_black_on_light_colours_and_white_on_dark():
    assert ink("#F0E442") == "black"  # Okabe-Ito yellow
    assert ink("white") == "black"
    assert ink("#0072B2") == "white"  # blue
    assert ink("black") == "white"


def test_code_cell_breaks_only_after_underscores_dots_and_slashes():
    cell = viz.code_cell("MODEL.RPN.POST_NMS_TOPK_TEST")
    assert cell.startswith("<code") and cell.endswith("</code>")
    text = cell[cell.index(">") + 1 : -len("</code>")]
    assert text.replace("<wbr>", "") == "MODEL.RPN.POST_NMS_TOPK_TEST"
    assert text.count("<wbr>") == 2 + 3  # two dots, three underscores
    assert viz.code_cell("a<b").count("&lt;") == 1, "escaped"


def test_class_legend_names_each_class_once():
    fig, ax = plt.subplots()
    viz.class_legend(fig, [3, 1, 3, 2], ["__background__", "square", "circle", "triangle"])
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["square", "circle", "triangle"]
    plt.close(fig)

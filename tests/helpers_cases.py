"""Val images the trace tests start from, found at run time with the shipped model.

A test that needs "an image where class NMS loses an object" or "an image with no miss" asks
for it here instead of naming an index: the shipped model decides which images those are, so
the indices change whenever the model is retrained. One ``explain_images`` pass over the
committed val split (about 5 s on one thread) finds them; each finder says what it looks for
and fails with a message naming it when no val image has it.
"""

from __future__ import annotations

from functools import lru_cache

from minimask import load_pretrained
from minimask.data import shapes_val
from minimask.explain import explain_images
from minimask.shapes import MAX_OBJECTS
from minimask.trace import explain


@lru_cache(maxsize=1)
def shipped():
    """The shipped model, loaded once for every finder (none of them changes it)."""
    return load_pretrained("shapes")


@lru_cache(maxsize=1)
def val_records() -> dict[int, dict]:
    """Index -> ``explain_images`` record of every val image (shipped model, matched by mask)."""
    return dict(explain_images(shipped(), shapes_val(), iou_type="segm"))


def causes(index: int) -> set[tuple[str, str]]:
    """The (stage, reason) of every miss of val image ``index``."""
    return {(m["stage"], m["reason"]) for m in val_records()[index]["misses"]}


def ordinary(index: int) -> bool:
    """Not a crowd: at most ``MAX_OBJECTS`` objects."""
    return val_records()[index]["objects"] <= MAX_OBJECTS


def _first(indices, what: str) -> int:
    found = next(iter(indices), None)
    if found is None:
        raise LookupError(f"no val image {what} with the shipped model (tests/helpers_cases.py)")
    return found


def clean_images() -> list[int]:
    """Ordinary val images without a miss, most objects first (ties: lower index first)."""
    records = val_records()
    clean = [i for i in records if ordinary(i) and not records[i]["misses"]]
    return sorted(clean, key=lambda i: (-records[i]["objects"], i))


@lru_cache(maxsize=1)
def clean_image() -> int:
    """The ordinary val image with the most objects (at least 6) and no miss: a changed
    threshold or cap is then the only cause of a miss."""
    return _first((i for i in clean_images() if val_records()[i]["objects"] >= 6), "without a miss and 6+ objects")


@lru_cache(maxsize=1)
def threshold_image() -> int:
    """A clean val image whose weakest match's proposal gives the matched class the highest
    probability (above the background): raising the score threshold to that match's score then
    loses it at the threshold itself, not in the classification."""
    model, val = shipped(), shapes_val()

    def weakest_is_its_class(i: int) -> bool:
        tr = explain(model, *val[i])
        if not tr.matches:
            return False
        weakest = min(tr.matches, key=lambda m: tr.shortlist.scores[m.detection])
        lin = tr.lineage(weakest.detection)
        return int(lin.class_probs.argmax()) == lin.label

    return _first((i for i in clean_images() if weakest_is_its_class(i)), "whose weakest match is its class's argmax")


@lru_cache(maxsize=1)
def class_nms_image() -> int:
    """The first val image that loses one object in class NMS and another called background."""
    want = {("shortlist", "nms"), ("classification", "background")}
    return _first((i for i in val_records() if want <= causes(i)), "with a class-NMS and a background miss")


@lru_cache(maxsize=1)
def portrait_two_causes_image() -> int:
    """The first ordinary portrait val image (taller than wide) whose misses have two causes."""
    val = shapes_val()

    def portrait(i: int) -> bool:
        info = val.image_info(i)
        return info["height"] > info["width"]

    return _first(
        (i for i in val_records() if ordinary(i) and portrait(i) and len(causes(i)) >= 2),
        "that is ordinary, portrait and has misses of two causes",
    )

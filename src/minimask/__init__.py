"""minimask: a minimal Mask R-CNN whose modules follow the book "How Mask R-CNN decides".

``MaskRCNN`` and ``load_pretrained`` are imported on first use, so that light commands
(``python -m minimask.data``) do not pay for building the model's modules.
"""

from typing import Any

from minimask.config import Config

__all__ = ["Config", "MaskRCNN", "load_pretrained"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "MaskRCNN":
        from minimask.model import MaskRCNN

        return MaskRCNN
    if name == "load_pretrained":
        from minimask.weights import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'minimask' has no attribute {name!r}")

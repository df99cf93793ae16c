"""minimask: a minimal Mask R-CNN whose modules follow the book "How Mask R-CNN decides"."""

from minimask.config import Config

__all__ = ["Config"]
__version__ = "0.1.0"

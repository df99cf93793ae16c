"""minimask: a minimal Mask R-CNN whose modules follow the book "How Mask R-CNN decides"."""

from minimask.config import Config
from minimask.model import MaskRCNN

__all__ = ["Config", "MaskRCNN"]
__version__ = "0.1.0"

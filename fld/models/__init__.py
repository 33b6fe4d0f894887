"""Networks: SwinV2 (teacher) and MobileViT-v2 (student) backbones, the heatmap
generator with the AAM heads, and ``LandmarkDetector`` built from a preset name.

    model = fld.models.LandmarkDetector(preset="mobilevitv2_050", image_size=256,
                                        scheme="300w_68")
    fld.models.list_presets()
"""

from fld.models.landmark_detector import (
    PRESETS, LandmarkDetector, build_backbone, list_presets, select_points,
)
from fld.models.heads import DECODERS, heatmap_generator
from fld.models.mobilevitv2 import MobileViTV2Backbone
from fld.models.swinv2 import SwinV2Backbone

__all__ = [
    "DECODERS", "PRESETS", "LandmarkDetector", "MobileViTV2Backbone", "SwinV2Backbone",
    "build_backbone", "heatmap_generator", "list_presets", "select_points",
]

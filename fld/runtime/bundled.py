"""The landmark models that ship inside ``fld`` (``fld/runtime/assets``), by name.

    Landmarker()                      # "default": default_68.tflite, the accurate one
    Landmarker(preset="fast")         # fast_68.tflite, the distilled fast student
    python tools/predict.py --model fast ...

Every tool whose ``--model`` takes a ``.tflite`` also takes these names (a file of the same
name in the working directory wins). Figures for each: MODEL_CARD.md.
"""

from __future__ import annotations

import os
from typing import Optional

ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
# name -> file in ASSETS_DIR
BUNDLED_MODELS = {
    "default": "default_68.tflite",     # MobileViT-v2 1.0, 128 px flip pair: most accurate
    "default_51": "default_51.tflite",  # the same network's 51 inner points (pair_51)
    "fast": "fast_68.tflite",           # distilled MobileViT-v2 0.5, 128 px, one crop
}
DEFAULT_MODEL = "default"


def bundled_model_path(name: str) -> str:
    """The file of bundled model ``name``; FileNotFoundError when it is not installed."""
    if name not in BUNDLED_MODELS:
        raise ValueError(f"no bundled model {name!r}: choose one of "
                         f"{', '.join(sorted(BUNDLED_MODELS))}, or give a .tflite path")
    path = os.path.join(ASSETS_DIR, BUNDLED_MODELS[name])
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"the bundled {name} model {path} is missing (a partial checkout or install?): "
            f"reinstall fld, or pass a .tflite exported by fld")
    return path


def resolve_model(model: Optional[str]) -> str:
    """A ``.tflite`` path for ``model``: None -> the default model, a bundled name (that is
    not an existing file) -> its asset file, anything else unchanged."""
    if model is None:
        return bundled_model_path(DEFAULT_MODEL)
    if model in BUNDLED_MODELS and not os.path.exists(model):
        return bundled_model_path(model)
    return model

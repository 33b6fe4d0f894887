"""The training run's settings: ``TrainConfig`` is the single source of the command-line
flags (``define_flags`` declares one absl flag per field, ``config_from_flags`` reads them
back, ``config_to_flagfile`` writes a re-runnable ``flags.txt``), so ``tools/train.py`` and
``tools/distill.py`` share every definition.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

STRATEGIES = ("default", "mirrored", "multi_worker")
KD_FORMS = ("mse", "l2_sum", "kl", "aam")
from fld.codec import DECODE_OPS_METHODS, VALIDATION_DECODE


def _field(default, help: str, **extra):
    return dataclasses.field(default=default, metadata={"help": help, **extra})


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run (one absl flag each, same names)."""

    # data
    data_dir: Optional[str] = _field(None, "Annotated faces: folder of .pts, .csv or WFLW .txt.")
    scheme: str = _field("300w_68", "Landmark scheme name or scheme .json path.")
    val_every: int = _field(10, "Hold out every N-th face for validation (0 = no validation).")
    max_train_faces: int = _field(0, "Use at most this many training faces (0 = all; smoke runs).")
    image_size: int = _field(256, "Input crop side in pixels.")
    # model
    model: str = _field("mobilevitv2_050", "Model preset (see fld.models.list_presets()).")
    teacher: Optional[str] = _field(None, "Teacher .keras file (stage 2, tools/distill.py).")
    init_from: Optional[str] = _field(None, "Start the student from this .keras model's weights, or "
                                      "an fld int8 .tflite's (dequantized; e.g. the shipped "
                                      "fld/runtime/assets/default_68.tflite) "
                                      "(layers matched by name and shape; e.g. fine-tune or "
                                      "distill a trained student, or reuse a backbone for a new "
                                      "scheme). A resumed run's state wins over it.")
    # optimization
    batch_size: int = _field(32, "Global batch size (summed over replicas).")
    epochs: int = _field(100, "Epochs to train (a resumed run continues up to this).")
    steps_per_epoch: int = _field(0, "Cap on optimizer steps per epoch (0 = one pass).")
    lr_backbone: float = _field(2e-4, "Peak AdamW learning rate of the backbone.")
    wd_backbone: float = _field(1e-4, "AdamW weight decay of the backbone.")
    lr_head: float = _field(1e-3, "Peak AdamW learning rate of the heads.")
    wd_head: float = _field(2e-5, "AdamW weight decay of the heads.")
    warmup_epochs: float = _field(1.0, "Linear warm-up length in epochs (then cosine to 0).")
    ema_momentum: float = _field(0.999, "EMA decay of the weights (0 = no EMA).")
    # losses
    star_weight: float = _field(1.0, "Weight of L_STAR on the fused heatmap.")
    point_weight: float = _field(10.0, "AAM weight of the point maps.")
    edge_weight: float = _field(10.0, "AAM weight of the edge maps.")
    kd_weight: Optional[float] = _field(None, "L_KD weight (default: 100 for mse, 1 otherwise).")
    kd_form: str = _field("mse", "L_KD form: mse (mean squared difference, the authors' "
                          "code) or l2_sum (per-landmark L2 distances summed, the paper's "
                          "equation), kl (per-landmark KL divergence of the spatial "
                          "distributions the decode reads) or aam (the AAM loss against the "
                          "teacher's point and edge maps).", enum=KD_FORMS)
    # augmentation (fld.data.augment.AugmentConfig)
    flip_prob: float = _field(0.5, "Horizontal flip probability.")
    rotation_sigma: float = _field(18.0, "Rotation standard deviation in degrees.")
    scale_sigma: float = _field(0.1, "Scale standard deviation (around 1).")
    shift_sigma: float = _field(0.05, "Shift standard deviation as a fraction of the crop.")
    occlusion_prob: float = _field(0.4, "Random occluding box probability.")
    blur_prob: float = _field(0.3, "Gaussian blur probability.")
    gamma_prob: float = _field(0.2, "Gamma change probability.")
    noise_prob: float = _field(0.2, "Gaussian noise probability.")
    gray_prob: float = _field(0.2, "Grayscale probability.")
    # run
    seed: int = _field(0, "Seed of weights, data order and augmentation.")
    skip_bad: bool = _field(False, "Skip (and count) faces with a bad annotation or an "
                                   "unreadable image instead of stopping at the first.")
    work_dir: Optional[str] = _field(None, "Output folder (checkpoints, logs); reused to resume.")
    strategy: str = _field("default", "tf.distribute strategy.", enum=STRATEGIES)
    jit_compile: bool = _field(False, "Compile the train step with XLA.")
    checkpoint_every_steps: int = _field(200, "Also save the resume state every N steps.")
    decode: str = _field(VALIDATION_DECODE, "Heatmap decode for the validation NME (soft_argmax "
                         "= the fused map's mean, what STAR trains).",
                         enum=DECODE_OPS_METHODS)
    num_sample_images: int = _field(4, "Validation faces drawn to TensorBoard each epoch.")
    threads: int = _field(0, "TF intra-op threads (0 = TensorFlow's default).")


# --- flags -------------------------------------------------------------------------------


def define_flags(flag_values=None) -> None:
    """Declares one absl flag per ``TrainConfig`` field (shared by the train CLIs)."""
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    for f in dataclasses.fields(TrainConfig):
        helptext, enum = f.metadata["help"], f.metadata.get("enum")
        kind = f.type.replace("Optional[", "").rstrip("]")
        if enum:
            flags.DEFINE_enum(f.name, f.default, list(enum), helptext, flag_values=fv)
        elif kind == "bool":
            flags.DEFINE_bool(f.name, f.default, helptext, flag_values=fv)
        elif kind == "int":
            flags.DEFINE_integer(f.name, f.default, helptext, flag_values=fv)
        elif kind == "float":
            flags.DEFINE_float(f.name, f.default, helptext, flag_values=fv)
        else:
            flags.DEFINE_string(f.name, f.default, helptext, flag_values=fv)


def config_from_flags(flag_values=None) -> TrainConfig:
    """The ``TrainConfig`` of parsed flags."""
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    return TrainConfig(**{f.name: fv[f.name].value for f in dataclasses.fields(TrainConfig)})


def config_to_flagfile(config: TrainConfig, command: str = "") -> str:
    """The config as an absl flagfile (``--name=value`` lines; unset values left out)."""
    lines = [f"# Resolved flags of this run. Re-run: {command} --flagfile=<this file>"
             if command else "# Resolved flags of this run (use with --flagfile)."]
    for f in dataclasses.fields(TrainConfig):
        value = getattr(config, f.name)
        if value is None:
            continue
        if isinstance(value, bool):
            lines.append(f"--{'' if value else 'no'}{f.name}")
        else:
            lines.append(f"--{f.name}={value}")
    return "\n".join(lines) + "\n"


def config_json(config: TrainConfig) -> str:
    """The config as JSON (for logs and tests)."""
    return json.dumps(dataclasses.asdict(config), indent=1)

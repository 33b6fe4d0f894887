"""Parameters and multiply-accumulates (MACs) of a landmark detector, per image.

    python tools/model_summary.py --model mobilevitv2_050 --image_size 256 --scheme 300w_68

What is counted and what is not: ``fld.models.macs``.
The last line is exactly ``macs: N params: N``.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from fld.cli import one_line_errors

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "mobilevitv2_050", "preset name (see fld.models.list_presets())")
flags.DEFINE_integer("image_size", 256, "input side in pixels")
flags.DEFINE_string("scheme", "300w_68", "landmark scheme name or JSON path")
flags.DEFINE_string("decoder", None, "decoder override: transposed, nearest or fpn")


def main(argv):
    del argv
    import fld.models
    from fld.models.macs import count_macs

    model = fld.models.LandmarkDetector(preset=FLAGS.model, image_size=FLAGS.image_size,
                                        scheme=FLAGS.scheme, decoder=FLAGS.decoder)
    backbone = model.backbone
    backbone_macs = sum(count_macs(backbone).values())
    per_kind = count_macs(model)
    macs, params = sum(per_kind.values()), model.count_params()
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    print(f"model: {FLAGS.model}  image_size: {FLAGS.image_size}  scheme: {FLAGS.scheme}  "
          f"decoder: {model.decoder} ({model.decoder_channels} ch)")
    print("outputs: " + ", ".join(f"{k} {tuple(v.shape[1:])}" for k, v in model.output.items()))
    print(f"backbone params: {backbone.count_params():,} "
          f"(trainable {sum(int(w.numpy().size) for w in backbone.trainable_weights):,})")
    print(f"backbone macs: {backbone_macs:,}")
    print(f"head+decoder params: {params - backbone.count_params():,}  "
          f"macs: {macs - backbone_macs:,}")
    print(f"total params: {params:,} (trainable {trainable:,})")
    for kind, value in per_kind.most_common():
        print(f"  macs {kind:28s} {value:>15,}")
    print(f"macs: {macs} params: {params}")


if __name__ == "__main__":
    app.run(one_line_errors(main, "model_summary.py"))

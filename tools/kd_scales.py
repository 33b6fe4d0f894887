"""The size of each loss term for a student and a teacher, on the same training batches.

    python tools/kd_scales.py --flagfile=configs/fast/student_distilled.flags \\
        [--init_from=runs/fast/distilled_s0/best.keras] [--batches 4]

Builds the run's student (``--model``, weights from ``--init_from`` if given, else the
untrained initialization) and teacher (``--teacher``), draws ``--batches`` augmented
batches of epoch 0 (the run's ``--seed``), and prints the mean per face of the weighted
STAR and AAM terms and of L_KD in each form at its default weight, so one can see whether
L_KD can steer training at all (a term thousands of times smaller than the others
cannot). Last line: ``kd_share: F`` (the run's own ``--kd_form`` term over the total).
"""

from __future__ import annotations


from absl import app, flags

from fld.cli import one_line_errors
from fld.training import trainer

trainer.define_flags()
flags.DEFINE_integer("batches", 4, "Training batches to average over.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import numpy as np
    import tensorflow as tf

    from fld.losses.distillation import FORMS, HeatmapDistillationLoss

    config = trainer.config_from_flags()
    if not config.teacher:
        raise app.UsageError("--teacher is required")
    data = trainer.load_data(config)
    steps = max(1, len(data.train) // config.batch_size)
    model = trainer.build_landmark_trainer(config, steps, tf.distribute.get_strategy())
    if config.init_from:
        trainer.init_student_weights(model.student, config.init_from, data.train)
    kd = {form: HeatmapDistillationLoss(form=form) for form in FORMS}
    sums: dict[str, list] = {}
    for x, y in trainer.epoch_dataset(data, config, 0, FLAGS.batches):
        outputs = model.student(x, training=False)
        teacher_maps = model._teacher_maps(x)
        terms = model._per_sample_terms(y, outputs, None)
        for form, loss in kd.items():
            terms[f"kd_{form}"] = loss.per_sample(teacher_maps, outputs, model.aam_loss)
        for name, value in terms.items():
            sums.setdefault(name, []).append(np.asarray(value))
    means = {name: float(np.concatenate(v).mean()) for name, v in sums.items()}
    print(f"student {config.model} ({config.init_from or 'untrained'}), teacher "
          f"{config.teacher}, {FLAGS.batches} batches of {config.batch_size}")
    for name, value in means.items():
        print(f"{name:>10}: {value:.6g}")
    own = means[f"kd_{config.kd_form}"] * (model.kd_loss.weight / kd[config.kd_form].weight)
    print(f"kd_share: {own / (own + means['star'] + means['aam']):.4g}")


if __name__ == "__main__":
    app.run(one_line_errors(main, "kd_scales.py"))

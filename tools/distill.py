"""Stage 2: distil a frozen teacher into the student (STAR + AAM + heatmap KD).

    python tools/distill.py --flagfile=configs/distill.flags --teacher=runs/teacher/best.keras
    python tools/distill.py --flagfile=configs/smoke.flags --model=mobilevitv2_050 \\
        --work_dir=/tmp/fld_smoke/student --teacher=/tmp/fld_smoke/teacher/best.keras

The teacher (a ``.keras`` file from ``tools/train.py``) must use the same scheme and
image size. Writes the student's ``best.keras`` and logs to ``--work_dir``; re-running
the same command resumes. Flags: ``fld.training.trainer``.
"""

import shlex
import sys

from absl import app, flags

from fld.cli import one_line_errors
from fld.training import trainer

trainer.define_flags()
flags.mark_flag_as_required("work_dir")
flags.mark_flag_as_required("data_dir")
flags.mark_flag_as_required("teacher")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    trainer.train(trainer.config_from_flags(), command="python " + shlex.join(sys.argv[:1]))


if __name__ == "__main__":
    app.run(one_line_errors(main, "distill.py"))

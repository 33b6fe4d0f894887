"""Stage 2: distill a frozen teacher into the student (STAR + AAM + heatmap KD).

    python tools/distill.py --flagfile=configs/distill.flags --teacher=runs/teacher/best.keras
    python tools/distill.py --flagfile=configs/smoke.flags --model=mobilevitv2_050 \\
        --work_dir=/tmp/fld_smoke/student --teacher=/tmp/fld_smoke/teacher/best.keras

The teacher (a ``.keras`` file from ``tools/train.py``) must use the same scheme and
image size. Writes the student's ``best.keras`` and logs to ``--work_dir``; re-running
the same command resumes. Flags: ``fld.training.trainer``.
"""

from absl import app

from fld.cli import one_line_errors
from fld.training import trainer

trainer.define_flags()
main = trainer.tool_main(stage=2)

if __name__ == "__main__":
    app.run(one_line_errors(main, "distill.py"))

"""Stage 1: train a landmark detector with STAR + AAM (the teacher, or a student alone).

    python tools/train.py --flagfile=configs/teacher.flags
    python tools/train.py --flagfile=configs/student.flags
    python tools/train.py --flagfile=configs/smoke.flags --work_dir=/tmp/fld_smoke/teacher

Writes ``best.keras`` (the model with the best validation NME, EMA weights), TensorBoard
logs, ``history.csv`` and ``flags.txt`` to ``--work_dir``. Re-running the same command
after an interruption resumes from the last checkpoint. Flags: ``fld.training.trainer``.
"""

from absl import app

from fld.cli import one_line_errors
from fld.training import trainer

trainer.define_flags()
main = trainer.tool_main(stage=1)

if __name__ == "__main__":
    app.run(one_line_errors(main, "train.py"))

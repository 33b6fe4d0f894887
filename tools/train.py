"""Stage 1: train a landmark detector with STAR + AAM (the teacher, or a student alone).

    python tools/train.py --flagfile=configs/teacher.flags
    python tools/train.py --flagfile=configs/student.flags
    python tools/train.py --flagfile=configs/smoke.flags --work_dir=/tmp/fld_smoke/teacher

Writes ``best.keras`` (the model with the best validation NME, EMA weights), TensorBoard
logs, ``history.csv`` and ``flags.txt`` to ``--work_dir``. Re-running the same command
after an interruption resumes from the last checkpoint. Flags: ``fld.training.trainer``.
"""

import shlex
import sys

from absl import app, flags

from fld.cli import one_line_errors
from fld.training import trainer

trainer.define_flags()
flags.mark_flag_as_required("work_dir")
flags.mark_flag_as_required("data_dir")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = trainer.config_from_flags()
    if config.teacher:
        raise app.UsageError("--teacher is for stage 2: use tools/distill.py")
    trainer.train(config, command="python " + shlex.join(sys.argv[:1]))


if __name__ == "__main__":
    app.run(one_line_errors(main, "train.py"))

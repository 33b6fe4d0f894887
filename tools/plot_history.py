"""Plots a training run's curves (history.csv of tools/train.py / tools/distill.py) to PNG.

    python tools/plot_history.py --work_dir runs/student --output curves.png

Left: training and validation loss; right: validation NME (inter-ocular, percent).
Several --work_dir flags draw several runs on the same axes (e.g. student alone vs
distilled). Also prints the validation-NME curve as a Markdown table.
"""

import csv
import os

from absl import app, flags

from fld.cli import one_line_errors
from fld.fileio import atomic_path

flags.DEFINE_multi_string("work_dir", None, "Training work directories (with history.csv).")
flags.DEFINE_string("output", "curves.png", "PNG to write.")
flags.mark_flag_as_required("work_dir")
FLAGS = flags.FLAGS


def read_history(work_dir: str) -> list[dict]:
    path = os.path.join(work_dir, "history.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no history (not a training work directory?)")
    with open(path, newline="") as f:
        rows = [{k: float(v) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(f)]
    if not rows:
        raise ValueError(f"{path}: no epochs recorded yet")
    return rows


def main(_):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, nme_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for work_dir in FLAGS.work_dir:
        rows = read_history(work_dir)
        name = os.path.basename(os.path.normpath(work_dir))
        epochs = [r["epoch"] for r in rows]
        loss_ax.plot(epochs, [r["loss"] for r in rows], label=f"{name} train")
        if "val_loss" in rows[0]:
            loss_ax.plot(epochs, [r["val_loss"] for r in rows], "--", label=f"{name} val")
        if "val_nme" in rows[0]:
            nme = [100 * r["val_nme"] for r in rows]
            nme_ax.plot(epochs, nme, marker="o", label=name)
            print(f"\n{name}\n\n| epoch | train loss | val NME io % |\n|---|---|---|")
            for r, n in zip(rows, nme):
                print(f"| {int(r['epoch'])} | {r['loss']:.3f} | {n:.2f} |")
    loss_ax.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    nme_ax.set(xlabel="epoch", ylabel="NME (inter-ocular, %)", title="validation NME")
    for ax in (loss_ax, nme_ax):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(FLAGS.output) as tmp:
        fig.savefig(tmp, format="png")
    print(f"\nwrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(one_line_errors(main, "plot_history.py"))

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "plot_history.py")


def test_plots_curves_and_prints_the_nme_table(tmp_path):
    run = tmp_path / "student"
    run.mkdir()
    (run / "history.csv").write_text(
        "epoch,loss,val_loss,val_nme\n1,9.0,8.0,0.50\n2,4.0,3.5,0.25\n")
    out = tmp_path / "curves.png"
    proc = subprocess.run([sys.executable, TOOL, "--work_dir", str(run), "--output", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| 2 | 4.000 | 25.00 |" in proc.stdout
    assert out.stat().st_size > 1000


def test_missing_history_is_named(tmp_path):
    proc = subprocess.run([sys.executable, TOOL, "--work_dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "history.csv" in proc.stderr

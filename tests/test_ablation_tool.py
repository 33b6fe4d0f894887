"""tools/ablation.py: bad rows are clear errors (the real run is in MODEL_CARD.md)."""

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize("row, message", [
    ("no-equals-sign", "expected NAME=MODEL.tflite:SOURCE.keras"),
    ("x=model.tflite", "expected NAME=MODEL.tflite:SOURCE.keras"),
    ("x=model.pb:model.keras", "is not a .tflite or .keras file"),
    ("x=missing.tflite:missing.keras", "missing.tflite not found"),
])
def test_bad_rows_exit_with_a_message(row, message):
    done = subprocess.run([sys.executable, "tools/ablation.py", "--data_dir", "data/sample_300w",
                           "--row", row], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert message in done.stderr

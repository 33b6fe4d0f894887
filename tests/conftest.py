"""Shared fixtures: the real faces in ../shared/data (skipped with a reason if absent)."""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_300W = os.path.join(os.path.dirname(REPO), "shared", "data", "300w", "train")


@pytest.fixture(scope="session")
def data_300w():
    if not os.path.isdir(DATA_300W):
        pytest.skip(f"real faces not found at {DATA_300W} (../shared/data beside the repo)")
    return DATA_300W


@pytest.fixture(scope="session")
def real_records(data_300w):
    """The first 24 real 68-point faces (lfpw/helen/afw, sorted by path)."""
    from fld.data.readers import read_pts_dir

    return read_pts_dir(os.path.join(data_300w, "afw"))[:24]

# tests/runtime_only runs in the TensorFlow-free environment of
# .ci/tflite_runtime_check.sh, which sets FLD_TFLITE_CHECK_DIR; elsewhere it is not collected.
collect_ignore = [] if os.environ.get("FLD_TFLITE_CHECK_DIR") else ["runtime_only"]

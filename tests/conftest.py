"""Shared fixtures: the real faces in ../shared/data.

Without that folder the tests that need real faces are skipped with a reason, and the run
ends with a banner counting them; in CI (``CI`` set to ``true`` or ``1``) they fail
instead, so a CI run can never go green without having seen a real face.
"""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_300W = os.path.join(os.path.dirname(REPO), "shared", "data", "300w", "train")
_MISSING = f"real faces not found at {DATA_300W} (../shared/data beside the repo)"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def require_real_faces() -> str:
    """The 300-W training folder; skips the calling test (fails it in CI) when absent."""
    if not os.path.isdir(DATA_300W):
        if in_ci():
            pytest.fail(f"CI: {_MISSING}", pytrace=False)
        pytest.skip(_MISSING)
    return DATA_300W


@pytest.fixture(scope="session")
def data_300w():
    return require_real_faces()


@pytest.fixture(scope="session")
def real_records(data_300w):
    """The first 24 real 68-point faces (lfpw/helen/afw, sorted by path)."""
    from fld.data.readers import read_pts_dir

    return read_pts_dir(os.path.join(data_300w, "afw"))[:24]


def pytest_terminal_summary(terminalreporter):
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if _MISSING in str(getattr(r, "longrepr", ""))]
    if skipped:
        terminalreporter.write_sep("!", f"{len(skipped)} tests SKIPPED: {_MISSING}",
                                   red=True, bold=True)


# tests/runtime_only runs in the TensorFlow-free environment of
# .ci/tflite_runtime_check.sh, which sets FLD_TFLITE_CHECK_DIR; elsewhere it is not collected.
collect_ignore = [] if os.environ.get("FLD_TFLITE_CHECK_DIR") else ["runtime_only"]

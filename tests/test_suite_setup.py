"""What `make test` promises about its own set-up: a nearly full disk stops the suite at once, saying why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_suite_stops_before_its_first_test_when_the_temporary_folder_is_nearly_full(tmp_path):
    # more than any disk has: the check in conftest.py must refuse, before a test runs, and name the folder
    # (--collect-only: without the check the inner run must not run this test again)
    env = {**os.environ, "BINAUDIT_TEST_TMP_GB": "1000000", "TMPDIR": str(tmp_path)}
    env.pop("PYTEST_XDIST_WORKER", None)
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-q", "--collect-only",
                           "tests/test_suite_setup.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stdout[-2000:]
    assert f"GB free under {tmp_path}; the suite needs about 1e+06 GB there" in done.stdout
    assert "collected" not in done.stdout  # it stopped before collecting, let alone running, a test

"""Shared fixtures: tiny synthetic bins and datasets, built once per test session.

Under pytest-xdist each worker is one of two processes on a 2-core machine, so torch gets one
thread per worker (set before torch is imported anywhere).
"""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

from pathlib import Path

import pytest

from data_tools.build import BuildOptions, build_dataset
from data_tools.synth import SynthOptions, generate

ABID_SAMPLE = Path(__file__).resolve().parent.parent.parent / "shared" / "abid-sample"


@pytest.fixture(scope="session")
def synth_raw(tmp_path_factory) -> Path:
    """120 small synthetic bins (counts 0..5, ~10% injected mismatches) in ABID layout."""
    out = tmp_path_factory.mktemp("synth_raw")
    generate(SynthOptions(n=120, out=out, seed=7, mismatch_rate=0.1, width=80, height=72), progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, synth_raw) -> Path:
    """`synth_raw` built into a counting dataset: <root>/{train,val,test}/<count>/<id>.jpg + manifest."""
    out = tmp_path_factory.mktemp("tiny_dataset")
    build_dataset(BuildOptions(source=synth_raw, out=out, progress=False))
    return out


@pytest.fixture(scope="session")
def abid_sample() -> Path:
    """The 100 real ABID bins beside the checkout; tests using it skip where it is absent."""
    if not (ABID_SAMPLE / "metadata").is_dir():
        pytest.skip("../shared/abid-sample is not present")
    return ABID_SAMPLE

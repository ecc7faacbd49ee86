"""Shared fixtures: tiny synthetic bins and datasets, built once per test session.

Under pytest-xdist each worker is one of two processes on a 2-core machine, so torch gets one
thread per worker (set before torch is imported anywhere).
"""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
# registering a model checks its ONNX and int8 scoring paths (seconds per model); the tests that are about it
# turn it back on, the rest register many models and score with torch fp32
os.environ.setdefault("BINAUDIT_CHECK_SCORING_PATHS", "false")

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from data_tools.build import BuildOptions, build_dataset
from data_tools.synth import SynthOptions, generate

# Hypothesis profiles (tests/test_fuzz.py): "fast" in `make test`, "long" with BINAUDIT_FUZZ=long. No example
# database: runs stay independent of earlier ones, and nothing is written into the checkout.
settings.register_profile("fast", max_examples=40, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=4000, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("BINAUDIT_FUZZ", "fast"))

# beside the checkout (../shared/abid-sample); BINAUDIT_ABID_SAMPLE points elsewhere (e.g. from a git worktree)
ABID_SAMPLE = Path(os.environ.get("BINAUDIT_ABID_SAMPLE")
                   or Path(__file__).resolve().parent.parent.parent / "shared" / "abid-sample")

# what a whole run writes into its temporary folders at once (measured about 0.6 GB with two workers, see
# tmp_path_retention_policy in pyproject.toml), with room to spare; BINAUDIT_TEST_TMP_GB overrides it
TMP_SPACE_NEEDED = float(os.environ.get("BINAUDIT_TEST_TMP_GB", "2")) * 1024**3


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop before the first test when the temporary folder is nearly full: otherwise tests fail one by one, far
    from the cause, with "No space left on device" inside torch.save or PostgreSQL."""
    tmp = tempfile.gettempdir()
    free = shutil.disk_usage(tmp).free
    if free < TMP_SPACE_NEEDED:
        pytest.exit(f"only {free / 1024**3:.1f} GB free under {tmp}; the suite needs about "
                    f"{TMP_SPACE_NEEDED / 1024**3:g} GB there (set TMPDIR to a folder with more room)", returncode=3)


@pytest.fixture(scope="session")
def synth_raw(tmp_path_factory) -> Path:
    """120 small synthetic bins (counts 0..5, ~10% injected mismatches) in ABID layout.

    Seed 8 builds into an uneven validation split (13 photos), which the two-process training test needs."""
    out = tmp_path_factory.mktemp("synth_raw")
    generate(SynthOptions(n=120, out=out, seed=8, max_count=5, counts="uniform", mismatch_rate=0.1, width=80,
                          height=72), progress=False)
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


@pytest.fixture(scope="session")
def moto_server():
    """A real moto server (S3, SageMaker, ...) on 127.0.0.1; yields its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request drowns test output
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_server, monkeypatch, tmp_path):
    """Environment pointing boto3 at the moto server with throwaway credentials; nothing reaches AWS."""
    return point_boto3_at(moto_server, monkeypatch, tmp_path)


def point_boto3_at(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return moto_server


def s3_bucket_name(request) -> str:
    """A bucket name unique to the test, so tests sharing one moto server never collide."""
    import hashlib

    return "t-" + hashlib.blake2b(request.node.nodeid.encode(), digest_size=8).hexdigest()


@pytest.fixture(scope="session")
def seeded_workspace(tmp_path_factory) -> Path:
    """A workspace seeded by the (tiny) first-run demo: history, a trained model, 30 scored bins. Copy before writing."""
    from app.demo import DemoPlan, seed_demo
    from binaudit.workspace import Workspace

    root = tmp_path_factory.mktemp("seeded") / "ws"
    ws = Workspace(root, f"sqlite:///{root / 'binaudit.db'}")
    seed_demo(ws, ws.open(), DemoPlan.tiny(), progress=False)
    return root


# ---------------------------------------------------------------- databases: SQLite and a real PostgreSQL server

DATABASES = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server of this test process (see tests/postgres_server.py). Never skips: a server that
    cannot start fails every test that needs it, with the reason."""
    from tests.postgres_server import PostgresServer, PostgresUnavailable

    server = None
    try:
        server = PostgresServer()
        server.start()
    except (PostgresUnavailable, OSError, KeyError) as exc:
        if server is not None:
            server.stop()
        pytest.fail(f"the PostgreSQL test server did not start: {exc}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_server) -> str:
    """A database migrated to the latest schema, to copy for each test."""
    from binaudit import db

    name = pg_server.create_database(name="binaudit_migrated")
    db.open_database(pg_server.url(name)).dispose()  # no connection may stay open on a template
    return name


@pytest.fixture
def pg_url(pg_server, pg_template) -> str:
    """A fresh, migrated PostgreSQL database for this test; dropped afterwards."""
    name = pg_server.create_database(template=pg_template)
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture
def pg_empty_url(pg_server) -> str:
    """A fresh, empty PostgreSQL database (no schema at all); dropped afterwards."""
    name = pg_server.create_database()
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture(params=DATABASES)
def database_url(request, tmp_path) -> str:
    """The same test on SQLite (a file in the test's folder) and on PostgreSQL (a fresh migrated database)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ws' / 'binaudit.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def seeded_pg_template(pg_server, seeded_workspace) -> str:
    """The seeded demo workspace's database copied into PostgreSQL (python -m binaudit copy-database's code)."""
    from binaudit import db
    from binaudit.copy_database import copy_database

    name = pg_server.create_database(name="binaudit_seeded")
    source = db.make_engine(f"sqlite:///{seeded_workspace / 'binaudit.db'}")
    target = db.make_engine(pg_server.url(name))
    copy_database(source, target)
    source.dispose()
    target.dispose()
    return name

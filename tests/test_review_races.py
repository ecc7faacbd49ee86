"""Two analysts on one bin, through every path: a decision carries the row version its reviewer saw.

Issue 12, item 3: `audit decide` read the row version just before writing, so a second reviewer silently replaced
the first one's decision (7 of 40 racing pairs both "succeeded"). Item 7: recounts have an upper bound.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit import imports, reviews
from audit.cli import main
from binaudit import db
from binaudit.workspace import Workspace
from tests.modeling_fixtures import jpeg_bytes, run_python, subprocess_env

ROOT = Path(__file__).resolve().parent.parent
# pairs of racing `decide` processes in `make test`; the acceptance run uses 40 (BINAUDIT_RACE_PAIRS=40)
RACE_PAIRS = int(os.environ.get("BINAUDIT_RACE_PAIRS", "10"))


@pytest.fixture
def ws(tmp_path, database_url) -> Workspace:
    """On SQLite and on PostgreSQL (conftest's database_url)."""
    return Workspace(tmp_path / "ws", database_url)


@pytest.fixture
def engine(ws):
    engine = ws.open()
    imports.import_upload(engine, ws, "00501.jpg", jpeg_bytes(), actor="t", expected_count=3)
    return engine


@pytest.fixture
def cli(ws, engine, monkeypatch, capsys):
    """`python -m audit ...` in this process: (exit code, stdout, stderr)."""
    env = subprocess_env(BINAUDIT_WORKSPACE=str(ws.root), BINAUDIT_DATABASE_URL=ws.database_url,
                         BINAUDIT_SECRETS=str(ws.root / "none.toml"))
    for key in ("BINAUDIT_WORKSPACE", "BINAUDIT_DATABASE_URL", "BINAUDIT_SECRETS"):
        monkeypatch.setenv(key, env[key])

    def run(*args: str) -> tuple[int, str, str]:
        rc = main(list(args))
        captured = capsys.readouterr()
        return rc, captured.out, captured.err

    run.env = env
    return run


def _reviews(engine) -> list[tuple[str, str, int | None]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(db.reviews.c.reviewer, db.reviews.c.decision,
                                                         db.reviews.c.recounted_count).order_by(db.reviews.c.id))]


def test_decide_from_the_shell_never_replaces_a_decision_it_was_not_shown(cli, engine):
    assert cli("decide", "00501", "--decision", "confirm_mismatch", "--recount", "4", "--reviewer", "ana")[0] == 0

    rc, out, err = cli("decide", "00501", "--decision", "unsure", "--reviewer", "ben")
    assert rc == 2 and out == ""
    assert err.startswith("error: bin 00501: 'confirm_mismatch', recount 4 by ana at ")
    assert "--replace" in err and "--expect-version 2" in err and err.count("\n") == 1
    assert reviews.bin_state(engine, "00501").decided_by == "ana"  # A's recount stays, so it still exports
    assert _reviews(engine) == [("ana", "confirm_mismatch", 4)]

    rc, _, err = cli("decide", "00501", "--decision", "unsure", "--reviewer", "ben", "--expect-version", "1")
    assert rc == 2 and "was decided meanwhile: ana decided 'Confirmed mismatch'" in err  # a stale version is refused
    rc, out, _ = cli("decide", "00501", "--decision", "unsure", "--reviewer", "ben", "--expect-version", "2")
    assert rc == 0 and "replacing 'confirm_mismatch' by ana" in out and "row version 3" in out
    rc, out, _ = cli("decide", "00501", "--decision", "dismiss", "--reviewer", "cy", "--replace")
    assert rc == 0 and "replacing 'unsure' by ben" in out
    assert [r[0] for r in _reviews(engine)] == ["ana", "ben", "cy"]

    rc, out, _ = cli("history", "00501")
    assert rc == 0 and out.startswith("bin 00501: 'dismiss' by cy at ") and "(row version 4)" in out


def test_racing_decide_processes_exactly_one_wins_and_the_other_is_told_who(cli, engine):
    proc = run_python(["-m", "tests.decide_race", "00501", "--pairs", str(RACE_PAIRS)], ROOT, cli.env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    pairs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(pairs) == RACE_PAIRS
    winners = []
    for pair in pairs:
        codes = sorted(o["rc"] for o in pair["outcomes"])
        assert codes == [0, 2], pair  # exactly one succeeds
        won = next(o for o in pair["outcomes"] if o["rc"] == 0)
        lost = next(o for o in pair["outcomes"] if o["rc"] == 2)
        assert "recorded" in won["out"] and "replacing" not in won["out"], pair
        # the other is told who decided, on one line, whether it lost inside the write or saw the decision first
        assert lost["err"].startswith("error: bin 00501") and lost["err"].count("\n") == 1, pair
        assert f"{won['reviewer']} decided" in lost["err"] or f"by {won['reviewer']} at" in lost["err"], pair
        winners.append(won["reviewer"])
    assert [r[0] for r in _reviews(engine)] == winners  # one stored decision per pair: the winner's
    with engine.connect() as conn:
        logged = conn.execute(sa.select(db.audit_log.c.actor).where(db.audit_log.c.action == "decide")
                              .order_by(db.audit_log.c.id)).scalars().all()
    assert logged == winners


def test_send_to_queue_needs_the_version_the_analyst_saw(engine):
    state = reviews.bin_state(engine, "00501")
    reviews.decide(engine, reviews.Decision("00501", reviews.DISMISS, "ana", state.row_version))
    with pytest.raises(reviews.ReviewConflict, match="ana decided 'Dismissed: record is right'"):
        reviews.send_to_queue(engine, "00501", actor="ben", expected_version=state.row_version)
    assert reviews.bin_state(engine, "00501").decision == reviews.DISMISS  # not cleared


def test_a_re_import_is_a_new_row_version(engine, ws):
    before = reviews.bin_state(engine, "00501")
    row = imports.import_upload(engine, ws, "00501.jpg", jpeg_bytes(), actor="t", expected_count=5)
    assert row["row_version"] == before.row_version + 1
    with pytest.raises(reviews.ReviewConflict, match="changed since it was loaded"):  # decided on the old record
        reviews.decide(engine, reviews.Decision("00501", reviews.CONFIRM, "ana", before.row_version, 5 + 1))


@pytest.mark.parametrize("recount", [10**12, 10**20, -1, reviews.MAX_RECOUNT + 1])
def test_a_recount_out_of_bounds_is_one_line_and_nothing_is_stored(cli, engine, recount):
    rc, _, err = cli("decide", "00501", "--decision", "confirm_mismatch", "--recount", str(recount),
                     "--reviewer", "ana")
    assert rc == 2
    assert err == f"error: a recounted quantity is a whole number from 0 to {reviews.MAX_RECOUNT:,}, got {recount}\n"
    assert _reviews(engine) == []
    assert cli("decide", "00501", "--decision", "confirm_mismatch", "--recount", str(reviews.MAX_RECOUNT),
               "--reviewer", "ana")[0] == 0

"""Queue and filter queries over 500,000 bins and their predictions, on SQLite (WAL) or PostgreSQL.

    .venv/bin/python -m bench.bench_audit_scale --bins 500000                 # SQLite
    .venv/bin/python -m bench.bench_audit_scale --bins 500000 --postgres      # a throwaway PostgreSQL server
    .venv/bin/python -m bench.bench_audit_scale --database-url postgresql+psycopg://.../empty_db

Rows are synthetic (random counts, items with names and ASINs, a seeded share decided) and are
bulk-inserted once (SQLite: into bench/out/audit-<n>.db, reused by reruns; PostgreSQL: into the
database given, or the throwaway server's, then VACUUM ANALYZE as autovacuum would after a bulk
load). Each query is timed best-of-5 after one warm-up, the way a dashboard rerun meets it (warm
cache). On PostgreSQL the plans of the text searches are printed, to show the pg_trgm index at
work. Target: every query < 100 ms.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from audit.browse import BinFilter, browse_count, browse_page
from audit.overview import overview
from audit.queue import queue_page, queue_size
from bench import OUT, best_of
from binaudit import db

WORDS = ["tea", "cable", "filter", "lamp", "socks", "charger", "novel", "treats", "soil", "bulb", "grinder", "game"]


def populate(engine: sa.Engine, n: int, seed: int = 0, chunk: int = 20_000,
             image_uri: Callable[[int], str] = lambda i: f"images/{i:06d}.jpg") -> int:
    """Bins, one prediction each by model version 1, and a decided share; returns the version id."""
    rng = np.random.default_rng(seed)
    now = db.utcnow()
    with db.write_tx(engine) as conn:
        version = conn.execute(db.model_versions.insert().values(
            name="bench", artifact_uri="/nowhere", arch="resnet18", image_size=224, max_count=5, config={},
            metrics={}, created_at=now)).inserted_primary_key[0]
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        expected = rng.integers(0, 8, size)
        probs = rng.dirichlet(np.ones(6) * 0.6, size)
        predicted = probs.argmax(1)
        mismatch = np.where(expected <= 5, 1 - probs[np.arange(size), np.minimum(expected, 5)], 1.0)
        decided = rng.random(size) < 0.05
        bins, preds = [], []
        for k in range(size):
            i = start + k
            word = WORDS[i % len(WORDS)]
            asin = f"B0{i:08d}"
            bins.append({"id": f"{i:06d}", "image_uri": image_uri(i), "expected_count": int(expected[k]),
                         "items": [{"asin": asin, "name": f"Acme {word} {i % 97}", "quantity": int(expected[k])}],
                         "search_text": f"{asin.lower()} acme {word} {i % 97}", "source": "dataset",
                         "split": ("train", "val", "test")[i % 10 // 8 + (i % 10 == 9)], "created_at": now,
                         "updated_at": now, "decision": "dismiss" if decided[k] else None,
                         "decided_at": now if decided[k] else None, "queued": False})
            preds.append({"bin_id": f"{i:06d}", "model_version_id": version, "predicted_count": int(predicted[k]),
                          "decoded_count": int(predicted[k]), "probabilities": [round(float(p), 4) for p in probs[k]],
                          "expected_count": int(expected[k]), "mismatch_probability": float(mismatch[k]),
                          "argmax_differs": bool(predicted[k] != expected[k]), "created_at": now,
                          "settled": bool(decided[k]), "queued": False})
        with db.write_tx(engine) as conn:
            conn.execute(db.bins.insert(), bins)
            conn.execute(db.predictions.insert(), preds)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE")
    return version


def text_search_plans(engine: sa.Engine, version: int, terms: tuple[str, ...]) -> None:
    """PostgreSQL's plan for each text search, as the browse page sends it."""
    from app.audit.browse import _query

    for term in terms:
        q = _query(engine.dialect.name, version, BinFilter(text=term), "bin_id").limit(48)
        sql = str(q.compile(engine, compile_kwargs={"literal_binds": True}))  # '%' comes out escaped as '%%'
        with engine.connect() as conn:
            plan = conn.exec_driver_sql("EXPLAIN " + sql).scalars().all()
        print(f"\nEXPLAIN, text search {term!r}:\n  " + "\n  ".join(plan))


def _open(args) -> tuple[sa.Engine, str, object]:
    """The engine to measure, where its data lives, and the throwaway server to stop (or None)."""
    if args.postgres:
        from tests.postgres_server import PostgresServer

        server = PostgresServer().start()
        url = server.url(server.create_database())
        return db.open_database(url), f"a throwaway PostgreSQL server ({server.bindir})", server
    if args.database_url:
        return db.open_database(args.database_url), args.database_url, None
    path = args.db or OUT / f"audit-{args.bins}.db"
    return db.open_database(f"sqlite:///{path}"), str(path), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bins", type=int, default=500_000)
    parser.add_argument("--db", type=Path, default=None, help="SQLite file (default bench/out/audit-<n>.db)")
    parser.add_argument("--database-url", default=None, help="a database URL instead (e.g. an empty PostgreSQL one)")
    parser.add_argument("--postgres", action="store_true",
                        help="start a throwaway PostgreSQL server (Debian's postgresql) and measure there")
    args = parser.parse_args()
    engine, where, server = _open(args)
    try:
        measure(engine, args.bins, where)
    finally:
        if server is not None:
            engine.dispose()
            server.stop()


def measure(engine: sa.Engine, n: int, where: str) -> None:
    with engine.connect() as conn:
        version = conn.execute(sa.select(db.model_versions.c.id).where(db.model_versions.c.name == "bench")).scalar()
    if version is None:
        start = time.perf_counter()
        version = populate(engine, n)
        print(f"populated {n:,} bins + predictions in {time.perf_counter() - start:.0f} s -> {where}")
    print(f"database: {engine.dialect.name} ({where})")

    queries = {
        "queue: first page (50)": lambda: queue_page(engine, version, threshold=0.5, limit=50),
        "queue: page 100 (offset 4950)": lambda: queue_page(engine, version, threshold=0.5, limit=50, offset=4950),
        "queue: size": lambda: queue_size(engine, version, threshold=0.5),
        "queue: size with budget": lambda: queue_size(engine, version, threshold=0.5, budget=200),
        "browse: first page, no filter": lambda: browse_page(engine, version, BinFilter()),
        "browse: expected=3, val split": lambda: browse_page(engine, version, BinFilter(expected=(3,), splits=("val",))),
        "browse: mismatch only, p in [0.6, 0.9]": lambda: browse_page(
            engine, version, BinFilter(mismatch_only=True, prob_min=0.6, prob_max=0.9)),
        "browse: by mismatch probability": lambda: browse_page(engine, version, BinFilter(), order="mismatch_probability"),
        "browse: text search (common word)": lambda: browse_page(engine, version, BinFilter(text="grinder")),
        "browse: text search (one ASIN)": lambda: browse_page(engine, version, BinFilter(text="b000412345")),
        "browse: count, expected=3": lambda: browse_count(engine, version, BinFilter(expected=(3,))),
        "browse: count, text search": lambda: browse_count(engine, version, BinFilter(text="grinder")),
        "overview figures": lambda: overview(engine, version, threshold=0.5),
    }
    print(f"{'query':45s} {'ms (best of 5)':>15s}")
    worst = 0.0
    for name, fn in queries.items():
        fn()  # warm-up
        ms = best_of(fn, 5) * 1000
        worst = max(worst, ms)
        print(f"{name:45s} {ms:15.1f}{'   > 100 ms' if ms > 100 else ''}")
    print(f"slowest: {worst:.1f} ms (target < 100 ms for queue and filter queries)")
    if engine.dialect.name == "postgresql":
        text_search_plans(engine, version, ("grinder", "b000412345"))


if __name__ == "__main__":
    main()

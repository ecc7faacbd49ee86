"""Queue and filter queries over 500,000 bins and their predictions, on SQLite (WAL) or PostgreSQL.

    .venv/bin/python -m bench.bench_audit_scale --bins 500000                                 # SQLite
    .venv/bin/python -m bench.bench_audit_scale --bins 500000 --databases sqlite,postgresql   # side by side
    .venv/bin/python -m bench.bench_audit_scale --databases postgresql --database-url postgresql+psycopg://...

PostgreSQL runs on a throwaway server (Debian's postgresql, started as the tests start theirs, with
the memory settings a database server of its own gets) unless --database-url names a database.

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
from contextlib import ExitStack
from dataclasses import dataclass
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
        # a closed 0..5 model: a record above 5 is beyond its range (no probability, no flag), a quarter of the bins
        beyond = expected > 5
        mismatch = 1 - probs[np.arange(size), np.minimum(expected, 5)]
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
                          "expected_count": int(expected[k]),
                          "mismatch_probability": None if beyond[k] else float(mismatch[k]),
                          "argmax_differs": None if beyond[k] else bool(predicted[k] != expected[k]),
                          "beyond_range": bool(beyond[k]), "created_at": now,
                          "settled": bool(decided[k]), "queued": False})
        with db.write_tx(engine) as conn:
            conn.execute(db.bins.insert(), bins)
            conn.execute(db.predictions.insert(), preds)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE")
    return version


def text_search_plans(engine: sa.Engine, version: int, terms: tuple[str, ...]) -> None:
    """PostgreSQL's plan for each text search, as the browse page sends it: its first page and its count."""
    from audit.browse import _query

    for term in terms:
        q = _query(engine.dialect.name, version, BinFilter(text=term), "bin_id")
        for what, query in (("page", q.limit(48)), ("count", q.order_by(None).with_only_columns(sa.func.count()))):
            sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))  # '%' comes out as '%%'
            with engine.connect() as conn:
                plan = conn.exec_driver_sql("EXPLAIN " + sql).scalars().all()
            print(f"\nEXPLAIN, text search {term!r}, {what}:\n  " + "\n  ".join(plan))


@dataclass
class Target:
    label: str
    engine: sa.Engine
    where: str
    version: int = 0


def _sqlite(args) -> Target:
    path = args.db or OUT / f"audit-{args.bins}.db"
    return Target("SQLite", db.open_database(f"sqlite:///{path}"), str(path))


def _postgres(args, stack: ExitStack) -> Target:
    if args.database_url:
        return Target("PostgreSQL", db.open_database(args.database_url), args.database_url)
    from tests.postgres_server import PostgresServer

    server = PostgresServer(options=BENCH_SERVER_SETTINGS).start()
    stack.callback(server.stop)
    target = Target("PostgreSQL", db.open_database(server.url(server.create_database())),
                    f"a throwaway server ({server.bindir}; {BENCH_SERVER_SETTINGS})")
    stack.callback(target.engine.dispose)
    return target


# What a database server of its own is given (the test server's defaults are sized for many small databases).
BENCH_SERVER_SETTINGS = "-c shared_buffers=1GB -c effective_cache_size=4GB -c random_page_cost=1.1"


def _prepared(target: Target, n: int) -> Target:
    with target.engine.connect() as conn:
        version = conn.execute(sa.select(db.model_versions.c.id).where(db.model_versions.c.name == "bench")).scalar()
    if version is None:
        start = time.perf_counter()
        version = populate(target.engine, n)
        print(f"{target.label}: populated {n:,} bins + predictions in {time.perf_counter() - start:.0f} s")
    print(f"{target.label}: {target.where}")
    target.version = version
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bins", type=int, default=500_000)
    parser.add_argument("--databases", default="sqlite", help="sqlite, postgresql, or both: sqlite,postgresql")
    parser.add_argument("--db", type=Path, default=None, help="SQLite file (default bench/out/audit-<n>.db)")
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL: this (empty or earlier populated) database instead of a throwaway server")
    args = parser.parse_args()
    wanted = [d.strip() for d in args.databases.split(",")]
    with ExitStack() as stack:
        targets = [_sqlite(args) if d == "sqlite" else _postgres(args, stack) for d in wanted]
        measure([_prepared(t, args.bins) for t in targets])


def measure(targets: list[Target]) -> None:
    """Each query on every database, interleaved (warm-up, then best of 5), so they meet the same machine."""
    table = {t.label: queries(t.engine, t.version) for t in targets}
    names = list(next(iter(table.values())))
    print(f"\n{'query':42s}" + "".join(f"{t.label + ' ms':>16s}" for t in targets))
    worst = {t.label: 0.0 for t in targets}
    for name in names:
        for t in targets:
            table[t.label][name]()  # warm-up
        best = {t.label: float("inf") for t in targets}
        for _ in range(5):
            for t in targets:
                best[t.label] = min(best[t.label], best_of(table[t.label][name], 1) * 1000)
        for label, ms in best.items():
            worst[label] = max(worst[label], ms)
        print(f"{name:42s}" + "".join(f"{best[t.label]:16.1f}" for t in targets)
              + ("   > 100 ms" if max(best.values()) > 100 else ""))
    print("slowest: " + ", ".join(f"{label} {ms:.1f} ms" for label, ms in worst.items())
          + " (target < 100 ms for queue and filter queries)")
    for t in targets:
        if t.engine.dialect.name == "postgresql":
            text_search_plans(t.engine, t.version, ("grinder", "b000412345"))


def queries(engine: sa.Engine, version: int) -> dict[str, Callable[[], object]]:
    return {
        "queue: first page (50)": lambda: queue_page(engine, version, threshold=0.5, limit=50),
        "queue: page 100 (offset 4950)": lambda: queue_page(engine, version, threshold=0.5, limit=50, offset=4950),
        "queue: size": lambda: queue_size(engine, version, threshold=0.5),
        "queue: size with budget": lambda: queue_size(engine, version, threshold=0.5, budget=200),
        "browse: first page, no filter": lambda: browse_page(engine, version, BinFilter()),
        "browse: expected=3, val split": lambda: browse_page(engine, version, BinFilter(expected=(3,), splits=("val",))),
        "browse: mismatch only, p in [0.6, 0.9]": lambda: browse_page(
            engine, version, BinFilter(mismatch_only=True, prob_min=0.6, prob_max=0.9)),
        "browse: beyond range only": lambda: browse_page(engine, version, BinFilter(beyond_range_only=True)),
        "browse: by mismatch probability": lambda: browse_page(engine, version, BinFilter(), order="mismatch_probability"),
        "browse: text search (common word)": lambda: browse_page(engine, version, BinFilter(text="grinder")),
        "browse: text search (one ASIN)": lambda: browse_page(engine, version, BinFilter(text="b000412345")),
        "browse: count, expected=3": lambda: browse_count(engine, version, BinFilter(expected=(3,))),
        "browse: count, text search": lambda: browse_count(engine, version, BinFilter(text="grinder")),
        "overview figures": lambda: overview(engine, version, threshold=0.5),
    }


if __name__ == "__main__":
    main()

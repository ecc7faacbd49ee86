"""Browse and Queue pages with 100,000 bins vs an empty database: script-run time, filter change, memory.

    .venv/bin/python -m bench.bench_dashboard --bins 100000

Runs the real dashboard under Streamlit's AppTest (which adds its own overhead, so the figures are
an upper bound for a browser session). Two workspaces: one with `--bins` synthetic rows (photos
cycle through 48 real synthetic JPEGs, so thumbnails are decoded and cached as in use), one with no
bins. Per page: the first script run of a fresh session, which lands on the page as a browser opening
its URL does, with st.cache_data cleared (cold: no cached thumbnails) and again with warm caches, and a
filter change (medians of several); then memory across `--reruns` filter changes of one session.
Targets: page run < 1.5 s, filter change < 300 ms, no memory growth.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from bench import OUT
from bench.bench_audit_scale import populate
from binaudit import db
from binaudit.workspace import Workspace
from data_tools.synth import SynthOptions, generate
from modeling.registry import ACTIVE_KEY

DASHBOARD = str(Path(__file__).resolve().parent.parent / "app" / "dashboard.py")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_workspace(root: Path, bins: int) -> None:
    ws = Workspace(root, f"sqlite:///{root / 'binaudit.db'}")
    engine = ws.open()
    if bins:
        generate(SynthOptions(n=48, out=root / "photos", seed=3, width=320, height=288), progress=False)
        photos = sorted((root / "photos" / "bin-images").glob("*.jpg"))
        rel = [p.relative_to(root).as_posix() for p in photos]
        version = populate(engine, bins, image_uri=lambda i: rel[i % len(rel)])
    else:
        with db.write_tx(engine) as conn:
            version = conn.execute(db.model_versions.insert().values(
                name="bench", artifact_uri="/nowhere", arch="resnet18", image_size=224, max_count=5, config={},
                metrics={}, created_at=db.utcnow())).inserted_primary_key[0]
    with db.write_tx(engine) as conn:
        db.set_state(conn, ACTIVE_KEY, version)


TITLES = {"browse": "Browse bins", "queue": "Mismatch queue"}


def session(root: Path, page: str):
    """A new session whose first run (the caller's next `run()`) lands on `page`, as a browser opening its URL."""
    from streamlit.testing.v1 import AppTest

    os.environ["BINAUDIT_WORKSPACE"] = str(root)
    at = AppTest.from_file(DASHBOARD, default_timeout=300)
    at.switch_page(f"app_pages/{page}.py")  # before any run: the page is found by its file name
    return at


def first_run(root: Path, page: str):
    """(seconds of a new session's first run, the session); checks that the run drew `page`."""
    at = session(root, page)
    seconds = timed(at.run)
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == [TITLES[page]], [t.value for t in at.title]
    return seconds, at


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(root: Path, page: str, change, repeats: int) -> tuple[float, float, float]:
    """(first run with cold caches, first run with warm caches, filter change), medians."""
    import streamlit as st

    cold, first, filtered = [], [], []
    for _ in range(repeats):
        st.cache_data.clear()  # no cached thumbnails: what the first analyst of the day meets
        cold.append(first_run(root, page)[0])
        seconds, at = first_run(root, page)
        first.append(seconds)
        change(at)
        filtered.append(timed(at.run))
        assert not at.exception, [e.value for e in at.exception]
    return statistics.median(cold), statistics.median(first), statistics.median(filtered)


def browse_filter(at) -> None:
    at.multiselect(key="f_expected").set_value([3])


def queue_filter(at) -> None:
    at.sidebar.slider(key="queue_threshold").set_value(0.8)


def memory_across_reruns(root: Path, reruns: int) -> None:
    """Python heap (tracemalloc, after a full collection) and RSS of one session across `reruns` filter changes,
    sampled every 10 from the 10th on.

    The heap is the leak signal; RSS also moves with allocator reuse and SQLite's page caches warming.
    """
    import gc
    import tracemalloc

    at = session(root, "browse")
    at.run()
    tracemalloc.start()
    heap, rss = {}, {}
    for k in range(1, reruns + 1):
        at.multiselect(key="f_expected").set_value([k % 6])
        at.run()
        if k % 10 == 0:
            gc.collect()
            heap[k], rss[k] = tracemalloc.get_traced_memory()[0] / 2**20, rss_mb()
    tracemalloc.stop()
    print(f"one session, reruns 10 -> {reruns}: Python heap {heap[10]:.1f} -> {heap[reruns]:.1f} MB "
          f"({heap[reruns] - heap[10]:+.2f} MB); RSS {rss[10]:.0f} -> {rss[reruns]:.0f} MB "
          f"({rss[reruns] - rss[10]:+.0f} MB)")
    moves = [v - rss[10] for v in rss.values()]
    print(f"RSS at every 10th rerun, relative to the 10th: {min(moves):+.0f} .. {max(moves):+.0f} MB; "
          f"Python heap {min(heap.values()):.1f} .. {max(heap.values()):.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bins", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reruns", type=int, default=300, help="filter changes of one session (a multiple of 10)")
    parser.add_argument("--workdir", type=Path, default=OUT / "dashboard")
    args = parser.parse_args()
    os.environ.setdefault("BINAUDIT_SECRETS", str(args.workdir / "no-secrets.toml"))
    full, empty = args.workdir / f"ws-{args.bins}", args.workdir / "ws-empty"
    for root, n in ((full, args.bins), (empty, 0)):
        if not (root / "binaudit.db").exists():
            print(f"preparing {root} ({n:,} bins) ...")
            make_workspace(root, n)

    session(empty, "browse").run()  # imports, caches and the page modules warm once per process
    print(f"{'page':8s} {'database':>10s} {'first run, cold (s)':>20s} {'first run (s)':>14s} {'filter change (s)':>18s}")
    for page, change in (("browse", browse_filter), ("queue", queue_filter)):
        for label, root in ((f"{args.bins:,}", full), ("empty", empty)):
            cold, first, filtered = measure(root, page, change, args.repeats)
            print(f"{page:8s} {label:>10s} {cold:20.3f} {first:14.3f} {filtered:18.3f}")

    memory_across_reruns(full, args.reruns)
    print("targets: first run < 1.5 s, filter change < 0.3 s, no memory growth")


if __name__ == "__main__":
    main()

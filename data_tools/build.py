"""Build a counting dataset from a folder in ABID layout.

Output (`out/`):
    <split>/<class>/<bin_id>.jpg   class folders named by item count (folder "0" holds empty bins); with
                                   --top-class open (the default) bins with more than N = --max-count items are
                                   kept in one more class folder, "N+1+" ("6+" for N = 5)
    metadata/<bin_id>.json         the metadata of every built bin, for the audit import
    manifest.csv                   one row per built bin: its true count and its class
    stats.json                     class distribution and true-count histogram per split, and what was left out
    errors.csv                     every problem (file, bin id, severity, reason)
    filtered.csv                   with --top-class drop (the published 0..N setting): bins with more than N items,
                                   left out by design, not errors (empty with --top-class open)

Stages: pair files -> parse metadata -> check images -> assign splits -> write. Bad files are
reported and skipped at each stage; nothing aborts on one bad bin.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from data_tools.images import BadImage, ImageInfo, inspect_jpeg, sha256_hex, write_image
from data_tools.layout import METADATA_DIR, bin_sort_key, class_folder, class_sort_key, open_class_folder, scan_local
from data_tools.metadata import read_metadata_file
from data_tools.problems import Problem, write_report
from data_tools.split import DEFAULT_FRACTIONS, SPLITS, assign_splits

MANIFEST = "manifest.csv"
STATS = "stats.json"
ERRORS = "errors.csv"
FILTERED = "filtered.csv"
TOP_CLASSES = ("open", "drop")  # bins with more than --max-count items: one more class, or left out
MANIFEST_FIELDS = (
    "bin_id", "count", "class", "split", "image_path", "width", "height", "bytes", "sha256",
    "orig_width", "orig_height", "n_skus", "metadata_path",
)


@dataclass
class BuildOptions:
    source: Path
    out: Path
    max_count: int = 5
    top_class: str = "open"  # "open": bins above max_count form the class "N+1+"; "drop": they go to filtered.csv
    fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    seed: int = 0
    max_side: int | None = None
    metadata_only: bool = False
    workers: int = min(16, 2 * (os.cpu_count() or 1))
    progress: bool | None = None  # None: show bars on a terminal only


@dataclass
class BuildResult:
    rows: list[dict[str, object]]
    problems: list[Problem]
    filtered: list[tuple[str, int]]
    stats: dict[str, object]


@dataclass(frozen=True, slots=True)
class BinSummary:
    """What the build needs of a parsed metadata file."""

    bin_id: str
    expected_quantity: int
    n_skus: int


@dataclass(frozen=True, slots=True)
class _Checked:
    record: BinSummary
    info: ImageInfo | None


def _bar(it: Iterable, total: int, desc: str, enabled: bool | None) -> Iterator:
    return iter(tqdm(it, total=total, desc=desc, unit="bin", disable=None if enabled is None else not enabled))


def _parse_chunk(metadata_dir: str, ids: list[str]) -> tuple[list[BinSummary], list[Problem]]:
    summaries: list[BinSummary] = []
    problems: list[Problem] = []
    for bin_id in ids:
        rel = f"{METADATA_DIR}/{bin_id}.json"
        result = read_metadata_file(os.path.join(metadata_dir, bin_id + ".json"), bin_id, rel)
        problems.extend(result.problems)
        if result.record is not None:
            summaries.append(BinSummary(bin_id, result.record.expected_quantity, result.record.n_skus))
    return summaries, problems


# Parsing is CPU-bound Python: below this many files a process pool costs more than it saves.
_POOL_MIN_FILES = 4096
_CHUNK = 2048


def _read_summaries(ids: list[str], metadata_dir: str, progress: bool | None) -> tuple[list[BinSummary], list[Problem]]:
    """Parse every metadata file, in one worker process per core for large sources (order kept)."""
    chunks = [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]
    processes = os.cpu_count() or 1
    summaries: list[BinSummary] = []
    problems: list[Problem] = []
    bar = tqdm(total=len(ids), desc="metadata", unit="bin", disable=None if progress is None else not progress)
    if processes > 1 and len(ids) >= _POOL_MIN_FILES:
        with ProcessPoolExecutor(processes) as pool:
            results = pool.map(_parse_chunk, [metadata_dir] * len(chunks), chunks)
            for (got, found), chunk in zip(results, chunks, strict=True):
                summaries += got
                problems += found
                bar.update(len(chunk))
    else:
        for chunk in chunks:
            got, found = _parse_chunk(metadata_dir, chunk)
            summaries += got
            problems += found
            bar.update(len(chunk))
    bar.close()
    return summaries, problems


def _check_images(
    records: list[BinSummary], image_path: Callable[[str], Path], workers: int, progress: bool | None
) -> tuple[list[_Checked], list[Problem]]:
    def check(record: BinSummary) -> _Checked | Problem:
        rel = f"bin-images/{record.bin_id}.jpg"
        try:
            return _Checked(record, inspect_jpeg(image_path(record.bin_id).read_bytes()))
        except BadImage as exc:
            return Problem(rel, str(exc), record.bin_id)
        except OSError as exc:
            return Problem(rel, f"unreadable file: {exc.strerror or exc}", record.bin_id)

    kept: list[_Checked] = []
    problems: list[Problem] = []
    with ThreadPoolExecutor(workers) as pool:  # PIL decodes without the GIL
        for outcome in _bar(pool.map(check, records), len(records), "images", progress):
            (problems if isinstance(outcome, Problem) else kept).append(outcome)
    return kept, problems


def read_manifest(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _write_csv(path: Path, fields: Iterable[str], rows: Iterable[Iterable[object]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(fields)
        writer.writerows(rows)
    tmp.replace(path)


def _remove_stale(out: Path, keep: set[str]) -> int:
    """Delete images under the split folders that the new manifest does not list (moved or removed bins)."""
    removed = 0
    for split in SPLITS:
        for path in (out / split).glob("*/*.jpg") if (out / split).is_dir() else ():
            if path.relative_to(out).as_posix() not in keep:
                path.unlink()
                removed += 1
    return removed


def class_names(max_count: int, top_class: str) -> list[str]:
    """The class folders of a build: "0".."N", and "N+1+" when the top class is open."""
    return [str(c) for c in range(max_count + 1)] + ([open_class_folder(max_count)] if top_class == "open" else [])


def class_table(rows: Iterable[dict[str, object]], max_count: int, top_class: str = "drop") -> dict[str, dict[str, int]]:
    """{split: {class: n}} with every split and class present (zeros included)."""
    table = {s: dict.fromkeys(class_names(max_count, top_class), 0) for s in SPLITS}
    for row in rows:
        table[str(row["split"])][class_folder(int(row["count"]), max_count)] += 1
    return table


def true_count_table(rows: Iterable[dict[str, object]], filtered: Iterable[tuple[str, int]]
                     ) -> dict[str, dict[str, int]]:
    """{split: {true count: n}} of the built bins, and {"filtered": {true count: n}} of those left out: the
    histogram the classes come from (the open class "6+" holds counts 6, 7, ... 20 alike)."""
    table: dict[str, dict[str, int]] = {s: {} for s in (*SPLITS, "filtered")}
    for split, count in [(str(r["split"]), int(r["count"])) for r in rows] + [("filtered", c) for _, c in filtered]:
        table[split][str(count)] = table[split].get(str(count), 0) + 1
    names = sorted({c for per in table.values() for c in per}, key=int)
    return {split: {c: per.get(c, 0) for c in names} for split, per in table.items()}


def _stats(opts: BuildOptions, rows: list[dict[str, object]], problems: list[Problem],
           filtered: list[tuple[str, int]], manifest_sha: str) -> dict[str, object]:
    return {
        # synth writes synth.json beside its bins; anything else is taken to be real ABID photos
        "source_kind": "synthetic" if (opts.source / "synth.json").is_file() else "abid",
        "max_count": opts.max_count,
        "top_class": opts.top_class,
        "seed": opts.seed,
        "fractions": opts.fractions,
        "max_side": opts.max_side,
        "metadata_only": opts.metadata_only,
        "bins": len(rows),
        "classes": class_table(rows, opts.max_count, opts.top_class),
        "true_counts": true_count_table(rows, filtered),
        "open_class_bins": sum(int(r["count"]) > opts.max_count for r in rows),
        "filtered_over_max_count": len(filtered),
        "errors": sum(p.is_error for p in problems),
        "warnings": sum(not p.is_error for p in problems),
        "manifest_sha256": manifest_sha,
    }


def build_dataset(opts: BuildOptions) -> BuildResult:
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    pairing = scan_local(opts.source, metadata_only=opts.metadata_only)
    problems = pairing.orphan_problems()

    records, parse_problems = _read_summaries(pairing.paired, str(opts.source / METADATA_DIR), opts.progress)
    problems += parse_problems
    if opts.top_class not in TOP_CLASSES:
        raise ValueError(f"top class must be one of {', '.join(TOP_CLASSES)}, got {opts.top_class!r}")
    keep_all = opts.top_class == "open"
    in_range = [r for r in records if keep_all or r.expected_quantity <= opts.max_count]
    filtered = [(r.bin_id, r.expected_quantity) for r in records if not keep_all and r.expected_quantity > opts.max_count]

    if opts.metadata_only:
        checked = [_Checked(r, None) for r in in_range]
    else:
        checked, image_problems = _check_images(in_range, pairing.image_path, opts.workers, opts.progress)
        problems += image_problems

    previous = {r["bin_id"]: r["split"] for r in read_manifest(out / MANIFEST)}
    # stratified by class: the open class is one stratum however its counts spread
    splits = assign_splits(
        ((c.record.bin_id, min(c.record.expected_quantity, opts.max_count + 1)) for c in checked), opts.fractions,
        opts.seed, previous,
    )
    checked.sort(key=lambda c: bin_sort_key(c.record.bin_id))
    rows = _write_bins(opts, checked, splits, pairing.image_path, pairing.metadata_path)

    if not opts.metadata_only:
        _remove_stale(out, {str(r["image_path"]) for r in rows})
    _write_csv(out / MANIFEST, MANIFEST_FIELDS, ([r[f] for f in MANIFEST_FIELDS] for r in rows))
    manifest_sha = hashlib.sha256((out / MANIFEST).read_bytes()).hexdigest()
    write_report(out / ERRORS, problems)
    _write_csv(out / FILTERED, ("bin_id", "expected_quantity"), sorted(filtered, key=lambda f: bin_sort_key(f[0])))
    stats = _stats(opts, rows, problems, filtered, manifest_sha)
    tmp = out / (STATS + ".tmp")
    tmp.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(out / STATS)
    return BuildResult(rows, problems, filtered, stats)


def _write_bins(
    opts: BuildOptions,
    checked: list[_Checked],
    splits: dict[str, str],
    image_path: Callable[[str], Path],
    metadata_path: Callable[[str], Path],
) -> list[dict[str, object]]:
    out = opts.out

    def write(c: _Checked) -> dict[str, object]:
        r = c.record
        split = splits[r.bin_id]
        folder = class_folder(r.expected_quantity, opts.max_count)
        row: dict[str, object] = {
            "bin_id": r.bin_id, "count": r.expected_quantity, "class": folder, "split": split, "image_path": "",
            "width": "", "height": "", "bytes": "", "sha256": "", "orig_width": "", "orig_height": "",
            "n_skus": r.n_skus, "metadata_path": "",
        }
        if c.info is None:
            return row
        rel = f"{split}/{folder}/{r.bin_id}.jpg"
        data = image_path(r.bin_id).read_bytes()
        written = write_image(data, out / rel, c.info, opts.max_side)
        if written != c.info:
            data = (out / rel).read_bytes()
        meta_rel = f"{METADATA_DIR}/{r.bin_id}.json"
        (out / METADATA_DIR).mkdir(exist_ok=True)
        shutil.copyfile(metadata_path(r.bin_id), out / meta_rel)
        row.update(
            image_path=rel, width=written.width, height=written.height, bytes=len(data), sha256=sha256_hex(data),
            orig_width=c.info.width, orig_height=c.info.height, metadata_path=meta_rel,
        )
        return row

    if opts.metadata_only:
        return [write(c) for c in checked]
    with ThreadPoolExecutor(opts.workers) as pool:
        return list(_bar(pool.map(write, checked), len(checked), "write", opts.progress))


def format_class_table(classes: dict[str, dict[str, int]], first: str = "count") -> str:
    """A distribution as a fixed-width table: one row per class (or count), one column per split."""
    names = sorted({c for per in classes.values() for c in per}, key=class_sort_key)
    splits = sorted(classes, key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s))
    header = f"{first:>5} " + " ".join(f"{s:>8}" for s in splits) + f" {'total':>8}"
    lines = [header, "-" * len(header)]
    for c in names:
        cells = [classes[s].get(c, 0) for s in splits]
        lines.append(f"{c:>5} " + " ".join(f"{n:>8}" for n in cells) + f" {sum(cells):>8}")
    totals = [sum(classes[s].values()) for s in splits]
    lines.append("-" * len(header))
    lines.append(f"{'all':>5} " + " ".join(f"{n:>8}" for n in totals) + f" {sum(totals):>8}")
    return "\n".join(lines)


def format_stats_tables(stats: dict[str, object]) -> str:
    """The class table, then the true-count histogram (with the filtered bins of a --top-class drop build)."""
    text = "classes\n" + format_class_table(stats["classes"], "class")  # type: ignore[arg-type]
    true_counts = stats.get("true_counts")
    if true_counts:
        shown = {k: v for k, v in true_counts.items() if k != "filtered" or any(v.values())}  # type: ignore[union-attr]
        text += "\n\ntrue counts (from the metadata)\n" + format_class_table(shown, "count")
    return text

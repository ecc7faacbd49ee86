"""Class distributions: of a built dataset (per split) or of a raw ABID-layout folder (all counts)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from data_tools.build import MANIFEST, STATS, class_table, format_class_table, format_stats_tables, read_manifest
from data_tools.layout import METADATA_DIR, scan_local
from data_tools.metadata import read_metadata_file
from data_tools.problems import DataToolsError


def dataset_stats_text(dataset: Path) -> str:
    stats_path = dataset / STATS
    if stats_path.is_file():
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
        return format_stats_tables(stats) + "\n" + build_summary(stats)
    rows = read_manifest(dataset / MANIFEST)
    max_count = max((int(r["count"]) for r in rows), default=0)
    return format_class_table(class_table(rows, max_count)) + f"\n{len(rows)} bins"


def build_summary(stats: dict) -> str:
    """One line: what was built, what the open class holds or what was filtered, what was wrong."""
    n, top = stats["max_count"], stats.get("top_class", "drop")  # a stats.json from before the open class: drop
    kept = (f"{stats.get('open_class_bins', 0)} of them in the class {n + 1}+ (more than {n} items)" if top == "open"
            else f"{stats['filtered_over_max_count']} filtered (more than {n} items, see filtered.csv)")
    return (f"{stats['bins']} bins built, {kept}; {stats['errors']} errors, {stats['warnings']} warnings "
            f"(see errors.csv)")


def source_count_distribution(source: Path) -> tuple[Counter[int], int]:
    """(expected quantity -> bins, unreadable files) over a folder's metadata."""
    pairing = scan_local(source, metadata_only=True)
    counts: Counter[int] = Counter()
    bad = 0
    for bin_id in pairing.paired:
        path = source / METADATA_DIR / f"{bin_id}.json"
        result = read_metadata_file(path, bin_id, str(path))
        if result.record is None:
            bad += 1
        else:
            counts[result.record.expected_quantity] += 1
    return counts, bad


def stats_text(path: Path) -> str:
    if (path / MANIFEST).is_file():
        return dataset_stats_text(path)
    if (path / METADATA_DIR).is_dir():
        counts, bad = source_count_distribution(path)
        total = sum(counts.values())
        lines = [f"{'count':>5} {'bins':>8} {'share':>7}"]
        lines += [f"{c:>5} {n:>8} {n / total:>7.1%}" for c, n in sorted(counts.items())]
        lines.append(f"{total} bins with usable metadata; {bad} unusable")
        return "\n".join(lines)
    raise DataToolsError(f"{path} is neither a built dataset (manifest.csv) nor an ABID-layout folder (metadata/)")

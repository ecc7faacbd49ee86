"""Problems found in input files, and the error report a build writes.

A problem never aborts a build: it is recorded with the file and the reason, the bin it
belongs to is left out (for errors) or kept (for warnings), and the rest goes on.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ERROR = "error"
WARNING = "warning"


class DataToolsError(Exception):
    """A fatal problem: the CLI prints its message on one line and exits non-zero."""


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    reason: str
    bin_id: str = ""
    severity: str = ERROR

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR


REPORT_FIELDS = ("file", "bin_id", "severity", "reason")


def write_report(path: Path, problems: Iterable[Problem]) -> None:
    """errors.csv: one row per problem, sorted so reruns give the same file."""
    rows = sorted(problems, key=lambda p: (p.file, p.severity, p.reason))
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(REPORT_FIELDS)
        for p in rows:
            writer.writerow((p.file, p.bin_id, p.severity, p.reason))
    tmp.replace(path)


def read_report(path: Path) -> list[Problem]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [Problem(r["file"], r["reason"], r["bin_id"], r["severity"]) for r in csv.DictReader(fh)]


def summarize(problems: Iterable[Problem], limit: int = 10) -> str:
    """A short human summary: counts by kind of reason, then the first few problems."""
    problems = list(problems)
    if not problems:
        return "no problems found"
    kinds = Counter(p.reason.split(":")[0] for p in problems)
    lines = [f"{len(problems)} problem(s):"]
    lines += [f"  {n:>6}  {kind}" for kind, n in kinds.most_common()]
    lines.append("first ones:")
    lines += [f"  {p.severity}: {p.file}: {p.reason}" for p in problems[:limit]]
    return "\n".join(lines)

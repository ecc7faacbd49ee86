"""Entry point of `make run`.

Until the dashboard lands this runs the data pipeline demo: synthetic bins in the workspace,
built into a counting dataset. The command stays the same when the dashboard arrives.
"""

from __future__ import annotations

import sys

from binaudit.config import load_settings
from data_tools.build import BuildOptions, build_dataset, format_class_table
from data_tools.synth import SynthOptions, generate


def main() -> int:
    settings = load_settings()
    raw = settings.workspace / "demo" / "raw"
    dataset = settings.workspace / "demo" / "dataset"
    if not (raw / "truth.csv").is_file():
        print(f"generating 300 synthetic bins in {raw} ...")
        generate(SynthOptions(n=300, out=raw, seed=0, mismatch_rate=0.08))
    result = build_dataset(BuildOptions(source=raw, out=dataset))
    print(format_class_table(result.stats["classes"]))
    print(f"dataset ready in {dataset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

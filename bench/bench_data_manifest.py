"""Manifest build over many metadata files (no images) vs a plain sequential json.load loop.

    .venv/bin/python -m bench.bench_data_manifest --n 100000

Both sides list the folder and read every file; the build also validates each record, assigns
the stratified split and writes manifest.csv, stats.json, errors.csv. Target: >= 0.7x the loop.
Timings are best-of-N on a warm page cache, alternating the two so neither gets a cache advantage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from bench import OUT, best_of
from data_tools.build import BuildOptions, build_dataset
from data_tools.synth import SynthOptions, generate


def plain_loop(metadata_dir: Path) -> int:
    n = 0
    for name in os.listdir(metadata_dir):
        with open(metadata_dir / name, encoding="utf-8") as fh:
            json.load(fh)
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="metadata files (default 100000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=OUT / "manifest")
    args = parser.parse_args()

    source = args.workdir / f"raw-{args.n}"
    if not (source / "truth.csv").is_file():
        print(f"generating {args.n} metadata files in {source} ...")
        generate(SynthOptions(n=args.n, out=source, seed=0, max_count=8, counts="uniform", images=False, workers=os.cpu_count() or 1),
                 progress=False)
    out = args.workdir / "dataset"
    metadata_dir = source / "metadata"
    plain_loop(metadata_dir)  # warm the page cache

    def build() -> None:
        shutil.rmtree(out, ignore_errors=True)  # a fresh build each time, not a rerun
        build_dataset(BuildOptions(source=source, out=out, metadata_only=True, progress=False))

    plain, built = [], []
    for _ in range(args.repeats):
        plain.append(best_of(lambda: plain_loop(metadata_dir), 1))
        built.append(best_of(build, 1))
    rows = sum(1 for _ in (out / "manifest.csv").open()) - 1
    plain_rate, build_rate = args.n / min(plain), args.n / min(built)
    print(f"files:                    {args.n}")
    print(f"manifest rows (0-5 bins): {rows}")
    print(f"plain json.load loop:     {plain_rate:,.0f} files/s  (best of {args.repeats}: {min(plain):.2f} s)")
    print(f"manifest build:           {build_rate:,.0f} bins/s   (best of {args.repeats}: {min(built):.2f} s)")
    print(f"ratio build / plain:      {build_rate / plain_rate:.2f}x  (target >= 0.70x)")


if __name__ == "__main__":
    main()

"""List the benchmarks: `python -m bench`."""

import pkgutil

import bench

print("benchmarks (run with: .venv/bin/python -m bench.<name> --help):")
for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
    if info.name.startswith("bench_"):
        print(f"  {info.name}")

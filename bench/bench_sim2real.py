"""Does the demo's model count real bins? The demo's first run on synthetic bins only, scored on real ABID photos.

    .venv/bin/python -m bench.bench_sim2real                       (about 5-10 minutes on 2 CPU cores)
    .venv/bin/python -m bench.bench_sim2real --real DIR            (another folder of real photos)
    .venv/bin/python -m bench.bench_sim2real --plan epochs=20 --plan image_size=112    (a variant of the recipe)
    .venv/bin/python -m bench.bench_sim2real --model-dir M         (score a trained model, no training)

The run seeds a fresh workspace exactly as the first `make run` does (`app.demo.seed_demo` with the demo's
plan: draw, build, train as a local job, draw and score the audit bins), timed, with the machine's load
average before and after (the machine may be shared). Then the demo's model scores every real photo of
`--real`: a folder in ABID layout (bin-images/ + metadata/; it is built with `data_tools build` into the work
folder, outside the repository, bins over 5 items set aside) or a built folder of `<count>/<photo>`
subfolders. Nothing real is ever trained on. Reported: accuracy and RMSE over the 0-5 bins with both
decodings and bootstrap 95% intervals (66 bins give about +-11 points), the confusion matrix, always-3 on the
same bins, and what the model says about bins holding more than 5 items: an open model (the demo's) should answer
"6+" for them, and it is also scored over all the bins with counts truncated at 6 (the open class counts as 6);
a closed one can only answer 0-5. The last line is `real_accuracy=0.XXX real_rmse=X.XXX` (argmax decoding, the
0-5 bins; the figure the literature reports).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# beside the checkout, as for the tests; BINAUDIT_ABID_SAMPLE points elsewhere (e.g. from a git worktree)
ABID_SAMPLE = Path(os.environ.get("BINAUDIT_ABID_SAMPLE") or ROOT.parent / "shared" / "abid-sample")
CLOSED_TOP = 5  # the exact counts: 0..5 (an open model adds "6+")
BOOTSTRAP_ROUNDS = 4000


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# ---------------------------------------------------------------- real photos

def real_photos(source: Path, workdir: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(photos with 0-5 items, photos with more) as (path, true count) from an ABID-layout or count folder."""
    if (source / "metadata").is_dir():
        return _built_abid(source, workdir / "real")
    if not source.is_dir():
        raise SystemExit(f"error: {source} is not a folder (give an ABID-layout folder or one of <count>/ folders)")
    photos = [(str(p), int(p.parent.name)) for p in sorted(source.glob("*/*"))
              if p.parent.name.isdigit() and p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    if not photos:
        raise SystemExit(f"error: no photos under {source}/<count>/")
    return [s for s in photos if s[1] <= CLOSED_TOP], [s for s in photos if s[1] > CLOSED_TOP]


def _built_abid(source: Path, out: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Build the 0-5 bins into `out` with data_tools (one test split, every bin); bins over 5 come from filtered.csv."""
    from data_tools.build import BuildOptions, build_dataset

    if out.exists():
        shutil.rmtree(out)
    result = build_dataset(BuildOptions(source=source, out=out, max_count=CLOSED_TOP, top_class="drop",
                                        fractions={"train": 0.0, "val": 0.0, "test": 1.0}, progress=False))
    within = [(str(out / str(r["image_path"])), int(r["count"])) for r in result.rows]  # type: ignore[call-overload]
    over = [(str(source / "bin-images" / f"{bin_id}.jpg"), count) for bin_id, count in result.filtered]
    return sorted(within), sorted(p for p in over if Path(p[0]).is_file())


# ---------------------------------------------------------------- the demo's model

def train_demo(workdir: Path, overrides: dict[str, str]) -> tuple[Path, float, dict]:
    """Seed a fresh workspace with the demo (as `make run` does); returns (model dir, seconds, version facts)."""
    from app.demo import DemoPlan, seed_demo
    from binaudit.workspace import Workspace
    from modeling.registry import active_version

    plan = DemoPlan()
    if overrides:
        fields = {f.name: f.type for f in dataclasses.fields(DemoPlan)}
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise SystemExit(f"error: unknown plan field(s) {', '.join(unknown)}; fields: {', '.join(fields)}")
        plan = dataclasses.replace(plan, **{k: _as_field(getattr(plan, k), v) for k, v in overrides.items()})
    root = workdir / "workspace"
    if root.exists():
        shutil.rmtree(root)
    ws = Workspace(root, f"sqlite:///{root / 'binaudit.db'}")
    print(f"demo plan: {plan}", flush=True)
    print(f"load average before: {load_average()} ({os.cpu_count()} cores)", flush=True)
    start = time.perf_counter()
    seed_demo(ws, ws.open(), plan, progress=False)
    seconds = time.perf_counter() - start
    print(f"load average after: {load_average()}", flush=True)
    version = active_version(ws.open())
    return version.model_dir, seconds, {"val_accuracy": version.val_accuracy, "val_rmse": version.val_rmse}


def _as_field(current: object, text: str) -> object:
    if isinstance(current, bool):
        return text.lower() in ("1", "true", "yes")
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    return text


# ---------------------------------------------------------------- scoring

def bootstrap_interval(true: np.ndarray, pred: np.ndarray, metric, rounds: int = BOOTSTRAP_ROUNDS,
                       seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of `metric` over bins resampled with replacement."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(true), size=(rounds, len(true)))
    values = np.array([metric(true[i], pred[i]) for i in idx])
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def score(model_dir: Path, within: list[tuple[str, int]], over: list[tuple[str, int]]) -> dict:
    from modeling.metrics import accuracy, confusion_matrix, decode, rmse
    from modeling.predictor import Predictor

    predictor = Predictor.load(model_dir, precision="fp32")
    counts = predictor.class_to_count

    def probabilities(samples: list[tuple[str, int]]) -> np.ndarray:
        results = list(predictor.predict_paths([p for p, _ in samples], batch_size=32, workers=0, progress=False))
        failed = [r for r in results if r.probs is None]
        if failed:
            raise SystemExit(f"error: {len(failed)} photo(s) could not be scored, e.g. {failed[0].path}: "
                             f"{failed[0].error}")
        return np.stack([r.probs for r in results]) if results else np.zeros((0, len(counts)))

    def figures(true: np.ndarray, pred: np.ndarray) -> dict:
        return {"accuracy": accuracy(true, pred), "rmse": rmse(true, pred),
                "accuracy_ci": bootstrap_interval(true, pred, accuracy),
                "rmse_ci": bootstrap_interval(true, pred, rmse)}

    true = np.array([c for _, c in within])
    probs = probabilities(within)
    report: dict = {"n": len(true), "true_histogram": np.bincount(true, minlength=len(counts)).tolist()}
    preds = {name: decode(probs, counts, name) for name in ("argmax", "expected")}
    for name, pred in preds.items():
        report[name] = {**figures(true, pred), "confusion": confusion_matrix(true, pred, len(counts)).tolist()}
    three = np.full_like(true, 3)
    report["always_3"] = {"accuracy": accuracy(true, three), "rmse": rmse(true, three)}
    if over:
        over_true = np.array([c for _, c in over])
        over_probs = probabilities(over)
        over_pred = decode(over_probs, counts, "argmax")
        report["over"] = {"n": len(over), "true_counts": sorted(over_true.tolist()),
                          "predicted_histogram": np.bincount(over_pred, minlength=len(counts)).tolist(),
                          "share_predicted_top": float(np.mean(over_pred == counts[-1])),
                          "mean_p_top": float(over_probs[:, -1].mean()),
                          "mean_p_top_within": float(probs[:, -1].mean()),
                          "mean_expected": float((over_probs @ np.asarray(counts)).mean())}
        if predictor.spec.classes.open_top:  # every bin, counts truncated at the open class's 6
            all_true = np.concatenate([true, np.minimum(over_true, counts[-1])])
            all_pred = np.concatenate([preds["argmax"], over_pred])
            report["all"] = {"n": len(all_true), **figures(all_true, all_pred)}
    report["labels"] = list(predictor.spec.classes.labels)
    return report


def print_report(report: dict) -> None:
    print(f"\nreal photos with 0-{CLOSED_TOP} items: {report['n']} (counts {report['true_histogram']})")
    print("| decoding | accuracy (95% CI) | RMSE (95% CI) |\n|---|---|---|")
    for name in ("argmax", "expected"):
        r = report[name]
        print(f"| {name} | {r['accuracy']:.3f} ({r['accuracy_ci'][0]:.3f}-{r['accuracy_ci'][1]:.3f}) "
              f"| {r['rmse']:.3f} ({r['rmse_ci'][0]:.3f}-{r['rmse_ci'][1]:.3f}) |")
    print(f"| always 3 | {report['always_3']['accuracy']:.3f} | {report['always_3']['rmse']:.3f} |")
    print("confusion (rows: true count, columns: argmax prediction):")
    for count, row in enumerate(report["argmax"]["confusion"]):
        print(f"  {count}: {row}")
    over = report.get("over")
    if over:
        print(f"\nbins with more than {CLOSED_TOP} items: {over['n']} (true counts {over['true_counts']})")
        top = report["labels"][-1]
        print(f"  argmax predictions {', '.join(report['labels'])}: {over['predicted_histogram']}; "
              f"predicted {top}: {over['share_predicted_top']:.1%}; mean p({top}) {over['mean_p_top']:.3f} "
              f"(on the 0-{CLOSED_TOP} bins {over['mean_p_top_within']:.3f}); mean expected count "
              f"{over['mean_expected']:.2f}")
    every = report.get("all")
    if every:
        print(f"all {every['n']} bins, counts truncated at 6 (6+ counts as 6): accuracy {every['accuracy']:.3f} "
              f"({every['accuracy_ci'][0]:.3f}-{every['accuracy_ci'][1]:.3f}), RMSE {every['rmse']:.3f} "
              f"({every['rmse_ci'][0]:.3f}-{every['rmse_ci'][1]:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, default=ABID_SAMPLE,
                        help=f"real photos: ABID layout or <count>/ folders (default {ABID_SAMPLE})")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "binaudit-sim2real",
                        help="where the demo workspace and the built real photos go (outside the repository)")
    parser.add_argument("--model-dir", type=Path, default=None, help="score this model instead of training the demo's")
    parser.add_argument("--plan", action="append", default=[], metavar="FIELD=VALUE",
                        help="change one field of the demo's plan (app.demo.DemoPlan), e.g. epochs=20")
    args = parser.parse_args()

    overrides = dict(item.split("=", 1) for item in args.plan)
    args.workdir.mkdir(parents=True, exist_ok=True)
    within, over = real_photos(args.real, args.workdir)
    print(f"real photos: {len(within)} with 0-{CLOSED_TOP} items, {len(over)} with more, from {args.real}", flush=True)
    if args.model_dir is None:
        model_dir, seconds, facts = train_demo(args.workdir, overrides)
        print(f"\ndemo first run (draw, build, train, score): {seconds:.0f} s; synthetic validation accuracy "
              f"{facts['val_accuracy']:.3f}, RMSE {facts['val_rmse']:.3f}", flush=True)
    else:
        model_dir = args.model_dir
    report = score(model_dir, within, over)
    print_report(report)
    print(f"real_accuracy={report['argmax']['accuracy']:.3f} real_rmse={report['argmax']['rmse']:.3f}")


if __name__ == "__main__":
    main()

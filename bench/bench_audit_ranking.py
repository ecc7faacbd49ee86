"""Does ranking by mismatch probability find more real stock mismatches than a fair argmax rule?

    .venv/bin/python -m bench.bench_audit_ranking --closed-model-dir C --open-model-dir O [--bins 4000]

A held-out synthetic set is drawn with the generator's default count distribution (ABID-like, 0..15 items) and
injected stock mismatches (the record's count differs from the items drawn, both ways and across the 5/6
boundary; truth.csv knows which). Every bin is scored by each model, and each model's bins are ranked two ways:

  posterior:  by mismatch probability: 1 - p(record) for a record of 0..5; for a record above 5, 1 - p("6+")
              with an open model, and nothing at all with a closed one (beyond its range: never ranked)
  argmax:     the fair baseline: bins whose most likely class differs from the record's class first, ranked by
              the model's confidence in that class (p(argmax)), then the rest, least confident agreement first

Average precision and precision at k are reported over all bins and separately for records of 0..5 and records
above 5, against the real mismatches (drawn != record). An open model cannot see a mismatch inside its open class
(a record of 9 on a bin of 7): such mismatches count as misses, and how many there are is printed. The models come
from `bench.bench_model_quality` (trained on synthetic bins of another seed).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

from audit.mismatch import average_precision, score_distributions
from bench import OUT
from data_tools.synth import SynthOptions, generate, read_truth

KS = (50, 100, 200)


def fair_argmax_scores(table: pd.DataFrame, probs: np.ndarray) -> np.ndarray:
    """The argmax rule as a ranking: flagged bins (argmax class != record class) first, by p(argmax); then the
    others by 1 - p(argmax). Bins without a flag (beyond a closed model's range) last, unranked."""
    confidence = probs.max(axis=1)
    flagged = table["argmax_differs"].fillna(False).to_numpy(dtype=bool)
    checked = table["argmax_differs"].notna().to_numpy()
    return np.where(~checked, -np.inf, np.where(flagged, 1.0 + confidence, 1.0 - confidence))


def precision_at(scores: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Share of real mismatches among the k top-ranked bins that have a score (fewer when fewer are ranked)."""
    ranked = np.flatnonzero(np.isfinite(scores))
    top = ranked[np.argsort(-scores[ranked], kind="stable")][:k]
    return float(truth[top].mean()) if len(top) else float("nan")


def ap_of_ranked(scores: np.ndarray, truth: np.ndarray) -> float:
    """Average precision over all real mismatches; an unranked bin (no score) is never found."""
    ranked = np.isfinite(scores)
    if not truth.any():
        return float("nan")
    found = average_precision(np.where(ranked, scores, -1e9), truth & ranked) if (truth & ranked).any() else 0.0
    return found * (truth & ranked).sum() / truth.sum()


def report(name: str, subset: str, scores: dict[str, np.ndarray], truth: np.ndarray) -> list[str]:
    lines = []
    for rule, s in scores.items():
        cells = [f"{precision_at(s, truth, k):.3f}" for k in KS]
        ranked = int(np.isfinite(s).sum())
        lines.append(f"| {name} | {subset} | {rule} | {len(truth)} | {int(truth.sum())} | {ranked} | "
                     f"{ap_of_ranked(s, truth):.3f} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--closed-model-dir", type=Path, default=OUT / "model-quality" / "model-closed")
    parser.add_argument("--open-model-dir", type=Path, default=OUT / "model-quality" / "model-open")
    parser.add_argument("--bins", type=int, default=4000, help="held-out bins to audit")
    parser.add_argument("--mismatch-rate", type=float, default=0.10)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--seed", type=int, default=90210,
                        help="seed of the held-out set; must differ from the seed that drew the models' training "
                             "bins (bins are a function of (seed, index): a shared seed means shared photos)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", type=Path, default=OUT / "ranking")
    args = parser.parse_args()

    audit = args.workdir / f"audit-{args.bins}-{args.seed}"
    if not (audit / "truth.csv").is_file():
        generate(SynthOptions(n=args.bins, out=audit, seed=args.seed, start_id=700001,
                              mismatch_rate=args.mismatch_rate, width=args.width, height=args.height,
                              workers=os.cpu_count() or 1), progress=False)
    truth = read_truth(audit / "truth.csv")
    ids = sorted(truth)
    drawn = np.array([truth[b][0] for b in ids])
    record = np.array([truth[b][1] for b in ids])
    is_mismatch = np.array([truth[b][2] for b in ids])
    above = record > 5
    print(f"held-out bins: {len(ids)} (seed {args.seed}), records above 5: {above.sum()}; real mismatches: "
          f"{is_mismatch.sum()} ({is_mismatch.mean():.1%}), of them {int((is_mismatch & above).sum())} with a record "
          f"above 5 and {int((is_mismatch & ~above).sum())} with a record of 0-5; crossing the 5/6 boundary: "
          f"{int((is_mismatch & ((drawn > 5) != above)).sum())}; inside the open class (both above 5, invisible to "
          f"an open model): {int((is_mismatch & above & (drawn > 5)).sum())}")

    from modeling.predictor import Predictor

    lines = ["| model | records | ranking | bins | real mismatches | ranked | AP | " + " | ".join(f"P@{k}" for k in KS)
             + " |", "|---|---|---|---|---|---|---|" + "---|" * len(KS)]
    for name, model_dir in (("closed", args.closed_model_dir), ("open", args.open_model_dir)):
        predictor = Predictor.load_torch(model_dir, device=args.device, precision="fp32")
        results = list(predictor.predict_paths([str(audit / "bin-images" / f"{b}.jpg") for b in ids], batch_size=64,
                                               progress=False))
        probs = np.stack([r.probs for r in results])
        classes = predictor.spec.classes
        table = score_distributions(probs, record.tolist(), classes=classes)
        posterior = table["mismatch_probability"].to_numpy(dtype=float)
        scores = {"posterior": np.where(np.isnan(posterior), -np.inf, posterior),
                  "argmax, by confidence": fair_argmax_scores(table, probs)}
        shown_drawn = np.minimum(drawn, classes.max_count + 1) if classes.open_top else drawn
        acc = np.mean(table["predicted_count"].to_numpy() == shown_drawn)
        print(f"{name} model ({model_dir}): classes {', '.join(classes.labels)}; accuracy on the drawn counts "
              f"{acc:.1%}; bins beyond its range: {int(table['beyond_range'].sum())}")
        for subset, mask in (("all", np.ones_like(above)), ("0-5", ~above), ("above 5", above)):
            lines += report(name, subset, {k: v[mask] for k, v in scores.items()}, is_mismatch[mask])
    print("\n".join(lines))


if __name__ == "__main__":
    main()

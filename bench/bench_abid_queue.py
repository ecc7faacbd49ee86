"""The review queue on real ABID bins: what the rule for records above 5 puts at its top, before and after.

    .venv/bin/python -m bench.bench_abid_queue --source ../shared/abid-sample \\
        --closed-model-dir bench/out/model-quality/model-closed --open-model-dir bench/out/model-quality/model-open

Every bin of the folder (ABID layout: photos and metadata) is scored by each model, and the queue at the threshold
is listed three ways:

  closed, before   the rule before the open class: a record above 5 scored p(count <= 5), which a softmax over
                   0..5 puts at 1.0 whatever the photo (reproduced here from the same probabilities)
  closed, now      a record above 5 is beyond the model's range: no probability, not queued on its own
  open, now        a record above 5 is checked against the photo: 1 - p("6+")

Nothing is written; the photos are read in place.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from audit.mismatch import score_distributions
from data_tools.layout import IMAGES_DIR, METADATA_DIR, scan_local
from data_tools.metadata import parse_metadata


def records(source: Path) -> dict[str, int]:
    pairing = scan_local(source)
    out = {}
    for bin_id in pairing.paired:
        parsed = parse_metadata((source / METADATA_DIR / f"{bin_id}.json").read_bytes(), bin_id, bin_id)
        if parsed.record is not None:
            out[bin_id] = parsed.record.expected_quantity
    return out


def composition(name: str, prob: np.ndarray, record: np.ndarray, threshold: float) -> str:
    queued = np.nan_to_num(prob, nan=-1.0) >= threshold
    order = np.argsort(-np.nan_to_num(prob, nan=-1.0), kind="stable")[: int(queued.sum())]
    top20 = order[:20]
    above = record > 5
    spread = prob[above & ~np.isnan(prob)]
    spread_text = (f"{spread.min():.3f}..{spread.max():.3f}, {len(np.unique(spread.round(6)))} distinct"
                   if len(spread) else "none")
    return (f"| {name} | {int(queued.sum())} | {int((queued & above).sum())} | {int((queued & ~above).sum())} | "
            f"{int(above[top20].sum())} / {len(top20)} | {int((prob[above] >= 1.0 - 1e-9).sum())} | "
            f"{int(np.isnan(prob[above]).sum())} | {spread_text} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="a folder in ABID layout")
    parser.add_argument("--closed-model-dir", type=Path, required=True)
    parser.add_argument("--open-model-dir", type=Path, required=True)
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()

    from modeling.predictor import Predictor

    expected = records(args.source)
    ids = sorted(expected)
    record = np.array([expected[b] for b in ids])
    print(f"{len(ids)} bins with usable metadata in {args.source}; {int((record > 5).sum())} with a record above 5")
    lines = ["| model, rule | queued | of them records > 5 | records 0-5 | records > 5 in the top 20 | "
             "records > 5 at 1.0 | records > 5 without a probability | p(records > 5) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, model_dir in (("closed", args.closed_model_dir), ("open", args.open_model_dir)):
        predictor = Predictor.load_torch(model_dir, precision="fp32")
        results = list(predictor.predict_paths([str(args.source / IMAGES_DIR / f"{b}.jpg") for b in ids],
                                               batch_size=32, progress=False))
        failed = [r.path for r in results if r.probs is None]
        assert not failed, failed
        probs = np.stack([r.probs for r in results])
        table = score_distributions(probs, record.tolist(), classes=predictor.spec.classes)
        now = table["mismatch_probability"].to_numpy(dtype=float)
        if not predictor.spec.classes.open_top:
            before = np.where(record > 5, probs.sum(axis=1).clip(0, 1), now)  # p(count <= 5): 1.0 by construction
            lines.append(composition("closed, before (p(<= 5) for records > 5)", before, record, args.threshold))
        lines.append(composition(f"{name}, now", now, record, args.threshold))
        agree = table["argmax_differs"].eq(False).sum()
        print(f"{name}: classes {', '.join(predictor.spec.classes.labels)}; predicted class == record class on "
              f"{agree} of {int(table['argmax_differs'].notna().sum())} checkable bins")
        if predictor.spec.classes.open_top:
            frame = pd.DataFrame({"bin": ids, "record": record, "p": now}).sort_values("p", ascending=False)
            print(f"{name}: top 10 of the queue: " + ", ".join(f"{r.bin} (record {r.record}, {r.p:.2f})"
                                                                 for r in frame.head(10).itertuples()))
    print(f"\nthreshold {args.threshold}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

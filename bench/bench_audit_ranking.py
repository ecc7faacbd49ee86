"""Does ranking by mismatch probability find more real stock mismatches than the argmax-differs rule?

    .venv/bin/python -m bench.bench_audit_ranking --model-dir M [--bins 2000 --mismatch-rate 0.1]

A held-out synthetic set is drawn with injected stock mismatches (the record's count differs from
the items drawn; truth.csv knows which). Every bin is scored by the model. Two rules flag bins:

  argmax rule:   flag when the most likely count differs from the record (a yes/no flag)
  posterior:     rank by mismatch probability 1 - p(record's count), flag the top k

Both are compared at the same number of flagged bins (k = how many the argmax rule flags, and a
few fixed analyst budgets): precision, recall, and average precision. Without --model-dir a model
is trained first on a separate synthetic history (slow on CPU: see --train-* flags).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from audit.mismatch import average_precision, precision_recall_at, score_distributions
from bench import OUT
from data_tools.build import BuildOptions, build_dataset
from data_tools.synth import SynthOptions, generate, read_truth


def train_model(workdir: Path, args: argparse.Namespace) -> Path:
    history, dataset, model = workdir / "history", workdir / "history-ds", workdir / "model"
    if (model / "model.pth").is_file():
        return model
    generate(SynthOptions(n=args.train_bins, out=history, seed=11, max_count=5, counts="uniform", width=args.width, height=args.height, workers=2))
    build_dataset(BuildOptions(source=history, out=dataset))
    subprocess.run([sys.executable, "-m", "modeling.train", "--train", str(dataset / "train"), "--val",
                    str(dataset / "val"), "--model-dir", str(model), "--output-data-dir", str(workdir / "out"),
                    "--image-size", str(args.image_size), "--epochs", str(args.epochs), "--loss", "ordinal",
                    "--lr", "0.05", "--batch-size", "32", "--workers", "1"], check=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="a trained model folder (else one is trained)")
    parser.add_argument("--bins", type=int, default=2000, help="held-out bins to audit")
    parser.add_argument("--mismatch-rate", type=float, default=0.10)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--height", type=int, default=176)
    parser.add_argument("--seed", type=int, default=90210,
                        help="seed of the held-out set; must differ from the seed that drew the model's training bins "
                             "(bins are a function of (seed, index): a shared seed means shared photos)")
    parser.add_argument("--train-bins", type=int, default=3000)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--workdir", type=Path, default=OUT / "ranking")
    args = parser.parse_args()

    model_dir = args.model_dir or train_model(args.workdir, args)
    audit = args.workdir / f"audit-{args.bins}-{args.seed}"
    if not (audit / "truth.csv").is_file():
        generate(SynthOptions(n=args.bins, out=audit, seed=args.seed, start_id=700001, max_count=5, counts="uniform",
                              mismatch_rate=args.mismatch_rate, width=args.width, height=args.height, workers=2))
    truth = read_truth(audit / "truth.csv")
    ids = sorted(truth)

    from modeling.predictor import Predictor

    predictor = Predictor.load_torch(model_dir, precision="fp32")
    results = list(predictor.predict_paths([str(audit / "bin-images" / f"{b}.jpg") for b in ids], batch_size=32))
    probs = np.stack([r.probs for r in results])
    expected = [truth[b][1] for b in ids]
    is_mismatch = np.array([truth[b][2] for b in ids])
    table = score_distributions(probs, expected)
    posterior = table["mismatch_probability"].to_numpy()
    argmax_flag = table["argmax_differs"].to_numpy(dtype=bool)
    drawn = np.array([truth[b][0] for b in ids])
    accuracy = float((table["predicted_count"].to_numpy() == np.minimum(drawn, 5)).mean())

    print(f"model: {model_dir}")
    print(f"held-out bins: {len(ids)}, real mismatches: {is_mismatch.sum()} ({is_mismatch.mean():.1%}); "
          f"model accuracy on the drawn counts: {accuracy:.1%}")
    k_argmax = int(argmax_flag.sum())
    print(f"\n{'flagged k':>10} {'rule':>26} {'precision':>10} {'recall':>8}")
    arg_p = is_mismatch[argmax_flag].mean() if k_argmax else 0.0
    arg_r = is_mismatch[argmax_flag].sum() / max(1, is_mismatch.sum())
    print(f"{k_argmax:>10} {'argmax differs (all flags)':>26} {arg_p:>10.3f} {arg_r:>8.3f}")
    for k in sorted({k_argmax, 50, 100, 200} - {0}):
        if k > len(ids):
            continue
        p, r = precision_recall_at(posterior, is_mismatch, k)
        print(f"{k:>10} {'posterior, top k':>26} {p:>10.3f} {r:>8.3f}")
        if k != k_argmax:
            # the argmax rule cannot rank inside its flags: take k of them in bin order (what a queue would show)
            first_k = np.flatnonzero(argmax_flag)[:k]
            ap_k = is_mismatch[first_k].mean() if len(first_k) else 0.0
            rk = is_mismatch[first_k].sum() / max(1, is_mismatch.sum())
            print(f"{k:>10} {'argmax flags, first k':>26} {ap_k:>10.3f} {rk:>8.3f}")
    ap_post = average_precision(posterior, is_mismatch)
    ap_arg = average_precision(argmax_flag.astype(float) - 1e-9 * np.arange(len(ids)), is_mismatch)
    print(f"\naverage precision: posterior ranking {ap_post:.3f}; argmax flag (ties in bin order) {ap_arg:.3f}; "
          f"chance {is_mismatch.mean():.3f}")


if __name__ == "__main__":
    main()

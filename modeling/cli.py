"""`python -m modeling {evaluate,predict,check}`: evaluate a model folder on a data folder, score photos with it,
check its faster scoring paths.

Jobs (training, tuning, serving, model versions) are `python -m jobs`; the training script is
`python -m modeling.train`. Errors the user can fix print one line (`error: ...`) and exit 2; a run that skipped
bad photos exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from modeling.argtypes import non_negative_int, positive_int, share
from modeling.scoring_paths import MAX_MISMATCH_DIFF, MIN_COUNT_AGREEMENT

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(Exception):
    """A problem with the command line or its inputs; printed as `error: <message>`."""


def add_scoring_arguments(p: argparse.ArgumentParser, precision: str) -> None:
    """Flags shared by the commands that score photos with a Predictor."""
    p.add_argument("--model-dir", type=Path, required=True, help="folder with model.pth and model_config.json")
    p.add_argument("--batch-size", type=positive_int, default=16, help="photos per forward pass (default 16)")
    p.add_argument("--workers", type=non_negative_int, default=None,
                   help="decoding processes (default: one per core, at most 4; 0: decode in the main process)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    add_path_arguments(p, precision)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_path_arguments(p: argparse.ArgumentParser, precision: str = "auto", runtime: str = "auto") -> None:
    """--runtime and --precision: every scoring command takes them (see modeling/scoring_paths.py)."""
    p.add_argument("--runtime", default=runtime, choices=("auto", "torch", "onnx"),
                   help=f"auto: the fastest engine whose scores passed the model's agreement check on this machine; "
                        f"onnx needs onnxruntime (default {runtime})")
    p.add_argument("--precision", default=precision, choices=("auto", "fp32", "bf16", "int8", "fp16"),
                   help=f"auto: the fastest precision that passed the agreement check (fp32 where none did); fp32 is "
                        f"exact; bf16 and fp16 (CUDA) run on torch, int8 on onnx (default {precision})")


def _load_predictor(args: argparse.Namespace):
    import torch

    from modeling.predictor import Predictor

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CliError(f"--device {args.device} but no CUDA device is visible; use --device cpu")
    predictor = Predictor.load(args.model_dir, device=args.device, precision=args.precision, runtime=args.runtime)
    print(f"scoring with {predictor.path}", file=sys.stderr)
    return predictor


# ---------------------------------------------------------------- evaluate

def _evaluate(args: argparse.Namespace) -> int:
    from modeling.evaluate import evaluate_folder, write_evaluation
    from modeling.metrics import format_per_class_table

    if not args.data.is_dir():  # before the model loads: one line, nothing else printed
        raise CliError(f"data folder not found: {args.data}")
    predictor = _load_predictor(args)
    metrics, rows = evaluate_folder(predictor, args.data, args.batch_size, args.workers,
                                    progress=False if args.no_progress else None)
    out = args.out or args.model_dir / "evaluation" / args.data.name
    write_evaluation(out, metrics, rows, predictor.spec.classes.labels)
    for name in ("argmax", "expected"):
        print(f"{name} decoding:\n{format_per_class_table(metrics[name])}\n")
    if metrics["data_has_open_class"] or predictor.spec.classes.open_top:
        top = predictor.spec.max_count + 1
        print(f"RMSE and MAE are over counts truncated at {top}: a bin of more than {top - 1} items counts as {top}")
    print(f"scored {metrics['n_scored']} of {metrics['n_images']} photos -> {out}")
    for failure in metrics["failed"][:20]:
        print(f"  failed: {failure['path']}: {failure['error']}", file=sys.stderr)
    return EXIT_PARTIAL if metrics["failed"] else EXIT_OK



# ---------------------------------------------------------------- predict

def _predict(args: argparse.Namespace) -> int:
    from modeling.predictor import expand_paths, write_predictions_csv

    paths = expand_paths(args.paths)
    if not paths:
        raise CliError(f"no images (*.jpg, *.jpeg, *.png) found in {', '.join(map(str, args.paths))}")
    predictor = _load_predictor(args)
    results = predictor.predict_paths(paths, args.batch_size, args.workers,
                                      progress=False if args.no_progress else None)
    failures: list[str] = []

    def noting_failures():
        for r in results:
            if r.error is not None:
                failures.append(f"{r.path}: {r.error}")
            yield r

    scored, failed = write_predictions_csv(noting_failures(), args.out, predictor.spec.classes)
    print(f"scored {scored} photos, {failed} failed -> {args.out}")
    for line in failures[:20]:
        print(f"  failed: {line}", file=sys.stderr)
    return EXIT_PARTIAL if failed else EXIT_OK


# ---------------------------------------------------------------- check

def _check(args: argparse.Namespace) -> int:
    from modeling.path_check import check_scoring_paths

    entry = check_scoring_paths(args.model_dir, args.train, args.val, calibration=args.calibration,
                                max_photos=args.max_photos, workers=args.workers, min_agreement=args.min_agreement)
    passed = [name for name, result in entry["paths"].items() if result["passed"]]
    print(f"checked on {entry['photos']} validation photos; passed: {', '.join(passed)} -> "
          f"{args.model_dir / 'scoring_paths.json'}")
    return EXIT_OK


# ---------------------------------------------------------------- entry

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modeling", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, run: Callable[[argparse.Namespace], int], help: str, precision: str
                ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(run=run)
        add_scoring_arguments(p, precision=precision)
        return p

    p = command("evaluate", _evaluate, "evaluate a model folder on a data folder (metrics.json, predictions.csv)",
                precision="fp32")
    p.add_argument("--data", type=Path, required=True, help="folder of <count>/<bin_id>.jpg, e.g. dataset/test")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder for metrics.json and predictions.csv (default MODEL_DIR/evaluation/<data name>)")
    p = command("predict", _predict, "score photos in batches and write a CSV of counts and probabilities",
                precision="auto")
    p.add_argument("paths", nargs="+", type=Path, help="image files or folders (searched for *.jpg/*.jpeg/*.png)")
    p.add_argument("--out", type=Path, required=True, help="CSV: path, bin_id, predicted_count, p0..pN, error")
    about = "export ONNX fp32 and int8 copies and check every scoring path against torch fp32 on validation photos"
    p = sub.add_parser("check", help=about, description=about)
    p.set_defaults(run=_check)
    p.add_argument("--model-dir", type=Path, required=True, help="folder with model.pth and model_config.json")
    p.add_argument("--train", type=Path, default=None,
                   help="training folder for the int8 calibration (default: the one the model was trained on)")
    p.add_argument("--val", type=Path, default=None,
                   help="validation folder the paths are compared on (default: the one the model was trained on)")
    p.add_argument("--calibration", type=positive_int, default=300, help="training photos to calibrate int8 on")
    p.add_argument("--max-photos", type=positive_int, default=2000, help="at most this many validation photos")
    p.add_argument("--workers", type=non_negative_int, default=None, help="decoding processes")
    p.add_argument("--min-agreement", type=share, default=MIN_COUNT_AGREEMENT,
                   help=f"a path passes when counts agree, and mismatch probabilities lie within "
                        f"{MAX_MISMATCH_DIFF}, on at least this share of the photos (default {MIN_COUNT_AGREEMENT})")
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from modeling.data import DatasetLayoutError
    from modeling.model import ModelConfigError, PretrainedWeightsError
    from modeling.preprocessing import ImageDecodeError
    from modeling.scoring_paths import ScoringPathError
    from modeling.serving import RequestError

    return (CliError, DatasetLayoutError, ModelConfigError, PretrainedWeightsError, ImageDecodeError, RequestError,
            ScoringPathError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_errors(lambda: args.run(args))


def run_reporting_errors(run: Callable[[], int], user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Run a command: a user's error (CliError, one of `user_errors`, a model's or a file's) is one `error: ...`
    line and exit 2, Ctrl-C exit 130; anything else is a bug and keeps its traceback."""
    try:
        return run()
    except (CliError, *user_errors) as exc:  # before the general case: checking the others imports torch (seconds)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # disk full, permission denied on the output, ...
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if isinstance(exc, _user_errors()):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        raise

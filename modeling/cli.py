"""`python -m modeling {evaluate,predict}`: evaluate a model folder on a data folder, score photos with it.

Jobs (training, tuning, serving, model versions) are `python -m jobs`; the training script is
`python -m modeling.train`. Errors the user can fix print one line (`error: ...`) and exit 2; a run that skipped
bad photos exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from modeling.argtypes import non_negative_int, positive_int

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
    p.add_argument("--precision", default=precision, choices=("auto", "fp32", "bf16", "fp16"),
                   help=f"auto: bf16 on CPUs with native bf16, fp16 on CUDA; fp32 is exact (default {precision})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _load_predictor(args: argparse.Namespace):
    import torch

    from modeling.predictor import Predictor

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CliError(f"--device {args.device} but no CUDA device is visible; use --device cpu")
    return Predictor.load(args.model_dir, device=args.device, precision=args.precision)


# ---------------------------------------------------------------- evaluate

def _evaluate(args: argparse.Namespace) -> int:
    from modeling.evaluate import evaluate_folder, write_evaluation
    from modeling.metrics import format_per_class_table

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
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from modeling.data import DatasetLayoutError
    from modeling.model import ModelConfigError, PretrainedWeightsError
    from modeling.preprocessing import ImageDecodeError
    from modeling.serving import RequestError

    return CliError, DatasetLayoutError, ModelConfigError, PretrainedWeightsError, ImageDecodeError, RequestError


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

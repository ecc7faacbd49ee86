"""`python -m audit {import,score,queue,decide,history,export,overview}`: the audit core from the shell.

Configuration (workspace, database, queue threshold and budget) comes from `binaudit.config`.
Fatal errors print one line and exit 2; no stack traces.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audit.reviews import DECISIONS, MAX_RECOUNT
from binaudit.config import ConfigError, Settings, load_settings
from binaudit.workspace import Workspace


class CliError(Exception):
    pass


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m audit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("import", help="import bins into the audit database")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", type=Path, help="a dataset built by `data_tools build`")
    src.add_argument("--folder", type=Path, help="a folder in ABID layout (bin-images/, metadata/)")
    src.add_argument("--s3", help="s3://bucket/prefix in ABID layout (the photos stay in S3, read through a cache)")
    p.add_argument("--limit", type=int, default=None, help="with --s3: only the first N bins")
    p.add_argument("--unsigned", action="store_true", help="with --s3: anonymous requests (public buckets)")

    p = sub.add_parser("score", help="score every pending bin with the active (or a chosen) model version")
    p.add_argument("--model", default=None, help="model version (id or name, e.g. v3); default: the active one")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: spare cores)")
    p.add_argument("--commit-every", type=int, default=256, help="results per database transaction")
    p.add_argument("--retry-failed", action="store_true", help="score again bins whose photo failed before")
    p.add_argument("--backend", choices=("local", "sagemaker"), default=None,
                   help="local predictor, or SageMaker batch transform (default: the backend setting)")
    p.add_argument("--runtime", choices=("auto", "torch", "onnx"), default="auto",
                   help="local scoring engine; auto: the fastest whose scores passed the model's agreement check on "
                        "this machine (onnx needs onnxruntime)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "int8"), default="auto",
                   help="local scoring precision; auto: the fastest that passed the agreement check, fp32 where none "
                        "did; fp32 is exact (as the SageMaker endpoint); bf16 runs on torch, int8 on onnx")

    p = sub.add_parser("queue", help="print the top of the review queue")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--threshold", type=float, default=None, help="default: mismatch_threshold setting")
    p.add_argument("--budget", type=int, default=None, help="default: daily_review_budget setting (0: none)")

    p = sub.add_parser("decide", help="record a decision on a bin",
                       description="Record a decision. It is made against the bin's row version: --expect-version "
                                   "(printed by `history`), or the current one while the bin has no decision. A bin "
                                   "that has one is not replaced without --replace; a decision made meanwhile by "
                                   "someone else is never replaced (you are told who made it).")
    p.add_argument("bin_id")
    p.add_argument("--decision", choices=DECISIONS, required=True)
    p.add_argument("--recount", type=int, default=None,
                   help=f"recounted quantity, 0 to {MAX_RECOUNT:,} (needed to confirm a mismatch)")
    p.add_argument("--reviewer", required=True)
    p.add_argument("--note", default="")
    p.add_argument("--expect-version", type=int, default=None, metavar="N",
                   help="the bin's row version you reviewed; refused if the bin has changed since")
    p.add_argument("--replace", action="store_true", help="replace the bin's current decision, whoever made it")

    p = sub.add_parser("history", help="every decision on a bin")
    p.add_argument("bin_id")

    p = sub.add_parser("export", help="write the queue, the decisions, or the recounts as a training folder")
    p.add_argument("what", choices=("queue", "decisions", "recounts"))
    p.add_argument("--out", type=Path, required=True,
                   help="a CSV file (for recounts a folder: python -m jobs train ... --recounts DIR)")
    p.add_argument("--val", default=None, help="recounts: the validation folder the job will use (its bins stay out)")
    p.add_argument("--test", default=None, help="recounts: the test folder the job will use (its bins stay out)")

    sub.add_parser("overview", help="headline figures")
    return parser


def _version(engine, ref: str | None):
    from modeling.registry import RegistryError, active_version, get_version

    try:
        version = get_version(engine, ref) if ref else active_version(engine)
    except RegistryError as exc:
        raise CliError(str(exc)) from None
    if version is None:
        raise CliError("no active model version: train one (python -m jobs train) or pass --model")
    return version


def _cmd_import(args, settings: Settings, ws: Workspace, engine) -> int:
    from audit.imports import ImportError_, import_abid_folder, import_dataset, import_s3_prefix
    from data_tools.problems import DataToolsError

    try:
        if args.dataset:
            report = import_dataset(engine, args.dataset, actor="cli")
        elif args.folder:
            report = import_abid_folder(engine, args.folder, actor="cli")
        else:
            report = import_s3_prefix(engine, ws, args.s3, actor="cli", limit=args.limit, unsigned=args.unsigned)
    except (ImportError_, DataToolsError) as exc:
        raise CliError(str(exc)) from None
    print(report)
    for p in report.problems[:20]:
        print(f"  {p.severity}: {p.file}: {p.reason}", file=sys.stderr)
    return 0


def _cmd_score(args, settings: Settings, ws: Workspace, engine) -> int:
    from audit.scorers import scorer_for
    from audit.scoring import score_bins
    from jobs import JobError
    from modeling.model import ModelConfigError
    from modeling.scoring_paths import ScoringPathError

    version = _version(engine, args.model)
    backend = args.backend or settings.backend
    if backend != "local" and (args.runtime, args.precision) != ("auto", "auto"):
        raise CliError("--runtime and --precision choose how the local backend scores; SageMaker's container "
                       "scores with torch")
    try:
        scorer = scorer_for(backend, version, settings=settings, workspace=ws, engine=engine,
                            batch_size=args.batch_size, workers=args.workers, precision=args.precision,
                            runtime=args.runtime, say=lambda line: print(f"model {version.name}: {line}",
                                                                         file=sys.stderr))
    except (JobError, ScoringPathError, ModelConfigError) as exc:
        raise CliError(str(exc)) from None
    report = score_bins(engine, ws, version, scorer, commit_every=args.commit_every, retry_failed=args.retry_failed)
    print(f"model {version.name}: {report}")
    return 0


def _cmd_queue(args, settings: Settings, ws: Workspace, engine) -> int:
    from audit.queue import queue_page, queue_size

    version = _version(engine, None)
    threshold = settings.mismatch_threshold if args.threshold is None else args.threshold
    budget = settings.daily_review_budget if args.budget is None else args.budget
    size = queue_size(engine, version.id, threshold=threshold, budget=budget or None)
    page = queue_page(engine, version.id, threshold=threshold, budget=budget or None, limit=args.limit)
    print(f"{size} bin(s) in the queue (model {version.name}, threshold {threshold:g})")
    if len(page):
        page = page.assign(predicted_count=page["predicted_count"].map(version.classes.label))
        print(page[["bin_id", "mismatch_probability", "expected_count", "predicted_count", "row_version"]]
              .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def _cmd_decide(args, settings: Settings, ws: Workspace, engine) -> int:
    from audit.reviews import Decision, ReviewConflict, ReviewError, bin_state, decide, version_to_decide
    from modeling.registry import active_version

    active = active_version(engine)
    try:
        state = bin_state(engine, args.bin_id)
        seen = version_to_decide(state, expect_version=args.expect_version, replace=args.replace)
        new_version = decide(engine, Decision(args.bin_id, args.decision, args.reviewer, seen, args.recount, args.note,
                                              active.id if active else None))
    except (ReviewError, ReviewConflict) as exc:
        raise CliError(str(exc)) from None
    replaced = f" (replacing '{state.decision}' by {state.decided_by})" if state.decision else ""
    print(f"{args.bin_id}: {args.decision} recorded{replaced}; row version {new_version}")
    return 0


def _cmd_history(args, settings: Settings, ws: Workspace, engine) -> int:
    from audit.reviews import ReviewError, bin_state, history

    try:
        print(bin_state(engine, args.bin_id).describe())
    except ReviewError as exc:
        raise CliError(str(exc)) from None
    frame = history(engine, args.bin_id)
    print(frame.to_string(index=False) if len(frame) else "no decisions yet")
    return 0


def _cmd_export(args, settings: Settings, ws: Workspace, engine) -> int:
    from audit.export import ExportError, build_recount_dataset, export_decisions, export_queue, recount_summary

    if args.what == "queue":
        version = _version(engine, None)
        n = export_queue(engine, version.id, args.out, threshold=settings.mismatch_threshold,
                         budget=settings.daily_review_budget or None)
    elif args.what == "decisions":
        n = export_decisions(engine, args.out)
    else:
        version = _version(engine, None)
        try:
            frame = build_recount_dataset(engine, ws, args.out, max_count=version.max_count,
                                          held_out=[f for f in (args.val, args.test) if f])
        except ExportError as exc:
            raise CliError(str(exc)) from None
        summary = recount_summary(frame)
        n = summary["written"]
        print(f"{summary['left_out']} recount(s) left out (bins in val or test), {summary['skipped']} skipped")
    print(f"wrote {n} row(s) to {args.out}")
    return 0


def _cmd_overview(args, settings: Settings, ws: Workspace, engine) -> int:
    from audit.overview import overview
    from modeling.registry import active_version

    version = active_version(engine)
    o = overview(engine, version.id if version else None, threshold=settings.mismatch_threshold,
                 budget=settings.daily_review_budget or None)
    share = f"{o.agree_share:.1%}" if o.agree_share is not None else "n/a"
    print(f"bins: {o.bins}  scored: {o.scored}  prediction agrees with record: {share}  open queue: {o.open_queue}  "
          f"decisions this week: {o.decisions_week}  confirmed mismatches: {o.confirmed_mismatches}")
    if o.beyond_range:
        print(f"beyond the model's range: {o.beyond_range} bin(s) whose record is above the active model's top count "
              f"{version.max_count}; it cannot check them (no mismatch probability, not queued): train an open model "
              f"(data_tools build --top-class open) to audit them")
    if version:
        acc = f"{version.val_accuracy:.3f}" if version.val_accuracy is not None else "?"
        rmse = f"{version.val_rmse:.3f}" if version.val_rmse is not None else "?"
        print(f"active model: {version.name} ({version.arch}, {version.image_size}px) val accuracy {acc}, RMSE {rmse}")
    return 0


COMMANDS = {"import": _cmd_import, "score": _cmd_score, "queue": _cmd_queue, "decide": _cmd_decide,
            "history": _cmd_history, "export": _cmd_export, "overview": _cmd_overview}


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        settings = load_settings()
        ws = Workspace.from_settings(settings)
        engine = ws.open()
        return COMMANDS[args.command](args, settings, ws, engine)
    except (CliError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130

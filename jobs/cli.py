"""`python -m modeling {train,tune,deploy,invoke,transform,jobs,models}`: the jobs layer on the command line.

    python -m modeling train --train D/train --val D/val --epochs 5          local by default; waits, streams the log
    python -m modeling tune --train D/train --val D/val --max-jobs 3          prints the best trial
    python -m modeling models                                                versions, metrics, the active one
    python -m modeling models promote v3 [--force]                           refuses a worse model unless forced
    python -m modeling deploy v3 | deploy --list | deploy --delete JOB        endpoints (they bill on SageMaker)
    python -m modeling invoke JOB --image photo.jpg [--expected-count 3]
    python -m modeling transform --model v3 --input photos/ --output out.jsonl
    python -m modeling jobs [--refresh] | jobs show|log|stop JOB | jobs resume JOB [--no-wait]

`--backend local|sagemaker` (default: the `backend` setting, "local"). Errors: one line `error: ...`, exit 2;
a job that ended Failed or Stopped exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.backends import follow
from modeling.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, CliError, Command, register

TRAINING_FLAG_FIELDS = (
    "arch", "epochs", "batch_size", "lr", "momentum", "weight_decay", "optimizer", "lr_schedule", "image_size",
    "loss", "label_smoothing", "seed", "pretrained", "workers", "max_count", "best_metric", "instance_type",
    "instance_count",
)


# ---------------------------------------------------------------- shared plumbing

def user_errors_exit_2(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The jobs layer's own errors become CliError: one `error: ...` line and exit 2 (modeling.cli.main)."""

    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        from binaudit.config import ConfigError
        from jobs.records import JobError
        from jobs.search_space import SearchSpaceError
        from modeling.registry import RegistryError

        try:
            return run(args)
        except (ConfigError, JobError, RegistryError, SearchSpaceError) as exc:
            raise CliError(str(exc)) from None

    return wrapped


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("local", "sagemaker"), default=None,
                   help="where jobs run (default: the backend setting, BINAUDIT_BACKEND; normally local)")
    p.add_argument("--workspace", type=Path, default=None, help="workspace folder (default: the workspace setting)")
    p.add_argument("--actor", default=None, help="who is acting, for the audit log (default: your user name)")


class Context:
    """Settings, workspace, database and backend for one command."""

    def __init__(self, args: argparse.Namespace) -> None:
        from binaudit.config import load_settings
        from binaudit.workspace import Workspace

        self.settings = load_settings(workspace=getattr(args, "workspace", None))
        self.workspace = Workspace.from_settings(self.settings)
        self.engine = self.workspace.open()
        self.backend_name = getattr(args, "backend", None) or self.settings.backend
        self.actor = getattr(args, "actor", None) or _user()
        self._backend = None

    @property
    def backend(self):
        from jobs.backend import get_backend

        if self._backend is None:
            self._backend = get_backend(self.backend_name, settings=self.settings, workspace=self.workspace,
                                        engine=self.engine)
        return self._backend

    def backend_for(self, job) -> Any:
        from jobs.backend import get_backend

        if job.backend == self.backend_name:
            return self.backend
        return get_backend(job.backend, settings=self.settings, workspace=self.workspace, engine=self.engine)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, dt.datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    return str(value)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


# ---------------------------------------------------------------- waiting and streaming

def watch(ctx: Context, job) -> Any:
    """Poll until the job ends; print the local log as it grows (SageMaker: status and metric changes)."""
    try:
        return follow(ctx.backend_for(job), job,
                      on_log=lambda text: print(text, end="" if text.endswith("\n") else "\n", flush=True),
                      on_change=lambda j: print(f"{j.id}: {j.status} {_metric_summary(j.last_epoch)}".rstrip(),
                                                flush=True))
    except KeyboardInterrupt:
        print(f"\nstopped watching; {job.id} keeps running (python -m modeling jobs stop {job.id} stops it)",
              file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None


def _metric_summary(row: dict[str, Any]) -> str:
    if not row:
        return ""
    return f"epoch {row.get('epoch')}: val_accuracy {_fmt(row.get('val_accuracy'))}, val_rmse {_fmt(row.get('val_rmse'))}"


def _outcome(job) -> int:
    """Exit status of a finished job, with the one-line error for a failure."""
    if job.status == "Completed":
        return EXIT_OK
    print(f"error: job {job.id} {job.status}" + (f": {job.failure_reason}" if job.failure_reason else ""),
          file=sys.stderr)
    return EXIT_PARTIAL


def _should_wait(args: argparse.Namespace, ctx: Context, backend_name: str | None = None) -> bool:
    return args.wait if args.wait is not None else (backend_name or ctx.backend_name) == "local"


def _announce(args: argparse.Namespace, ctx: Context, job) -> bool:
    """Print the started job; True when the command should watch it to the end (else say how to follow it)."""
    print(f"started {job.kind} job {job.id} on {job.backend}" + (f" ({job.external_id})" if job.external_id else ""),
          flush=True)
    if _should_wait(args, ctx, job.backend):
        return True
    print(f"follow it with: python -m modeling jobs show {job.id} --refresh")
    return False


def _registered_line(ctx: Context, job) -> str:
    from modeling import registry

    if job.model_version_id is None:
        return f"job {job.id} {job.status}; no model version registered"
    version = registry.get_version(ctx.engine, job.model_version_id)
    hint = "" if version.active else f"\nnot active yet: python -m modeling models promote {version.name}"
    return (f"registered model version {version.name} (val accuracy {_fmt(version.val_accuracy)}, "
            f"val RMSE {_fmt(version.val_rmse)}) from job {job.id}{hint}")


# ---------------------------------------------------------------- train

def _training_arguments(p: argparse.ArgumentParser) -> None:
    from jobs.params import TrainingParams

    add_common_arguments(p)
    p.add_argument("--train", default=None, help="training folder of <count>/<image> (local) or s3:// prefix")
    p.add_argument("--val", default=None, help="validation folder or s3:// prefix")
    p.add_argument("--test", default=None, help="optional test folder or s3:// prefix")
    p.add_argument("--include-recounts", action="store_true",
                   help="add the analysts' recounts (confirmed mismatches with a count) to the training data")
    defaults = TrainingParams()
    for field in dataclasses.fields(TrainingParams):
        if field.name in TRAINING_FLAG_FIELDS:
            default = getattr(defaults, field.name)
            kind = {int: int, float: float}.get(type(default), str)
            if field.name in ("workers", "instance_count"):
                kind = int
            where = " (SageMaker)" if field.name.startswith("instance_") else ""
            p.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=None,
                           help=f"train.py's --{field.name.replace('_', '-')}{where} (default {default})")
    p.add_argument("--extra", action="append", default=[], metavar="FLAG=VALUE",
                   help="another train.py flag, e.g. --extra lr-gamma=0.5 (repeatable)")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                   help="wait for the end and stream progress (default: wait locally, not on SageMaker)")


def training_params(args: argparse.Namespace):
    from jobs.params import TrainingParams

    values = {name: getattr(args, name) for name in TRAINING_FLAG_FIELDS if getattr(args, name) is not None}
    extra = {}
    for item in args.extra:
        name, sep, value = item.partition("=")
        if not sep or not name.strip("-"):
            raise CliError(f"--extra takes FLAG=VALUE, got {item!r}")
        extra[name.strip().lstrip("-")] = value
    channels = {k: getattr(args, k) for k in ("train", "val", "test") if getattr(args, k)}
    return TrainingParams(**channels, **values, include_recounts=args.include_recounts, extra=extra)


@user_errors_exit_2
def _train(args: argparse.Namespace) -> int:
    ctx = Context(args)
    job = ctx.backend.start_training(training_params(args), actor=ctx.actor)
    return _follow_training(args, ctx, job)


def _follow_training(args: argparse.Namespace, ctx: Context, job) -> int:
    """Announce a started training job; when waiting, watch it and name the model version it registered."""
    if not _announce(args, ctx, job):
        return EXIT_OK
    job = watch(ctx, job)
    if job.status == "Completed":
        print(_registered_line(ctx, job))
    return _outcome(job)


register(Command("train", "start a training job (local by default) and register the model it makes",
                 _training_arguments, _train))


# ---------------------------------------------------------------- tune

def _tuning_arguments(p: argparse.ArgumentParser) -> None:
    from jobs.params import OBJECTIVES, STRATEGIES

    _training_arguments(p)
    p.add_argument("--max-jobs", type=int, default=4, help="number of trials (default 4)")
    p.add_argument("--max-parallel-jobs", type=int, default=1,
                   help="trials at a time (default 1; the local backend runs at most 2)")
    p.add_argument("--objective", choices=tuple(OBJECTIVES), default="val_accuracy",
                   help="val_accuracy (maximised) or val_rmse (minimised)")
    p.add_argument("--strategy", choices=STRATEGIES, default="bayesian", help="how trials are drawn")
    p.add_argument("--search-space", default=None,
                   help="JSON object (or a file holding one) of parameter -> {type, low, high, log | values}; "
                        "default: lr, weight_decay (log), batch_size, arch, image_size")
    p.add_argument("--early-stopping", action="store_true", help="stop trials that fall behind (SageMaker: Auto)")
    p.add_argument("--tuning-seed", type=int, default=0, help="seed of the trial sampler (local)")


def _search_space(text: str | None):
    from jobs.search_space import DEFAULT_SEARCH_SPACE, space_from_json

    if text is None:
        return dict(DEFAULT_SEARCH_SPACE)
    path = Path(text)
    raw = path.read_text(encoding="utf-8") if not text.lstrip().startswith("{") and path.is_file() else text
    try:
        return space_from_json(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise CliError(f"--search-space is not valid JSON ({exc})") from None


def _print_best(ctx: Context, job) -> None:
    best = job.output.get("best_trial")
    if not best:
        return
    value = best.get("value")
    print(f"best trial: {best.get('job_id') or best.get('training_job_name')} "
          f"{job.output.get('objective')}={_fmt(value)} {json.dumps(best.get('values') or {})}"
          + (f" -> model version {best['model_version']}" if best.get("model_version") else ""))


@user_errors_exit_2
def _tune(args: argparse.Namespace) -> int:
    from jobs.params import TuningParams

    ctx = Context(args)
    params = TuningParams(base=training_params(args), search_space=_search_space(args.search_space),
                          objective=args.objective, max_jobs=args.max_jobs, max_parallel_jobs=args.max_parallel_jobs,
                          strategy=args.strategy, early_stopping=args.early_stopping, seed=args.tuning_seed)
    job = ctx.backend.start_tuning(params, actor=ctx.actor)
    if not _announce(args, ctx, job):
        return EXIT_OK
    job = watch(ctx, job)
    _print_best(ctx, job)
    return _outcome(job)


register(Command("tune", "start a hyperparameter tuning job over the shared search space; reports the best trial",
                 _tuning_arguments, _tune))


# ---------------------------------------------------------------- deploy / invoke

def _deploy_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("version", nargs="?", default=None, help="model version to deploy, e.g. v3 (default: the active one)")
    p.add_argument("--delete", metavar="ENDPOINT", default=None,
                   help="delete an endpoint (job id, local URL or SageMaker endpoint name) instead")
    p.add_argument("--list", action="store_true", help="list live endpoints instead (SageMaker: all in the region)")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                   help="wait until the endpoint answers (default: locally yes, on SageMaker no)")


def _print_endpoints(endpoints: list[dict[str, Any]]) -> None:
    if not endpoints:
        print("no live endpoints")
        return
    rows = [[e["name"], e.get("status") or "-", e.get("url") or e.get("instance_type") or "-",
             e.get("model_version") or "-", e.get("job_id") or "(not BinAudit's)", _fmt(e.get("created_at"))]
            for e in endpoints]
    print(_table(["endpoint", "status", "url / instance", "model", "job", "created"], rows))


@user_errors_exit_2
def _deploy(args: argparse.Namespace) -> int:
    from modeling import registry

    ctx = Context(args)
    if args.list:
        _print_endpoints(ctx.backend.list_endpoints())
        return EXIT_OK
    if args.delete:
        job = ctx.backend.delete_endpoint(args.delete, actor=ctx.actor)
        print(f"deleted endpoint {args.delete}" + (f" (job {job.id} {job.status})" if job is not None else ""))
        return EXIT_OK
    version = registry.get_version(ctx.engine, args.version) if args.version else registry.active_version(ctx.engine)
    if version is None:
        raise CliError("no active model version; name one (python -m modeling models lists them)")
    wait = args.wait if args.wait is not None else ctx.backend_name == "local"
    job = ctx.backend.deploy(version.id, actor=ctx.actor, wait=wait)
    where = job.output.get("endpoint_url") or job.output.get("endpoint_name") or "starting"
    print(f"deployment {job.id}: {version.name} -> {where} ({job.output.get('endpoint_status', job.status)})")
    if job.backend == "sagemaker":
        print(f"it bills until deleted: python -m modeling deploy --backend sagemaker --delete {job.id}")
    else:
        print(f"stop it with: python -m modeling deploy --delete {job.id}")
    return _outcome(job) if not job.is_active else EXIT_OK


register(Command("deploy", "deploy a model version to an endpoint; --list live endpoints; --delete one",
                 _deploy_arguments, _deploy))


def _invoke_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("endpoint", help="deployment job id, local URL or SageMaker endpoint name")
    p.add_argument("--image", type=Path, default=None, help="a JPEG or PNG photo to count")
    p.add_argument("--expected-count", type=int, default=None, help="the stock record, for a mismatch probability")
    p.add_argument("--body", type=Path, default=None, help="send this file as the body instead")
    p.add_argument("--content-type", default=None, help="content type of --body (default from the file name)")


def _request_body(args: argparse.Namespace) -> tuple[bytes, str]:
    import base64

    if args.image is not None:
        data = args.image.read_bytes()
        if args.expected_count is None:
            kind = "image/png" if args.image.suffix.lower() == ".png" else "image/jpeg"
            return data, kind
        doc = {"image": base64.b64encode(data).decode("ascii"), "expected_count": args.expected_count}
        return json.dumps(doc).encode("utf-8"), "application/json"
    if args.body is not None:
        kind = args.content_type or {".json": "application/json", ".png": "image/png"}.get(
            args.body.suffix.lower(), "image/jpeg")
        return args.body.read_bytes(), kind
    raise CliError("give --image PHOTO or --body FILE")


@user_errors_exit_2
def _invoke(args: argparse.Namespace) -> int:
    ctx = Context(args)
    body, content_type = _request_body(args)
    print(json.dumps(ctx.backend.invoke(args.endpoint, body, content_type), indent=2))
    return EXIT_OK


register(Command("invoke", "send a photo to an endpoint and print its JSON answer", _invoke_arguments, _invoke))


# ---------------------------------------------------------------- transform

def _transform_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--model", default=None, help="model version, e.g. v3 (default: the active one)")
    p.add_argument("--input", required=True, help="folder of photos (local) or s3:// prefix (SageMaker)")
    p.add_argument("--output", default=None,
                   help="JSON-lines file or folder (local) or s3:// prefix (SageMaker); default: the job's folder")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                   help="wait for the end (default: locally yes, on SageMaker no)")


@user_errors_exit_2
def _transform(args: argparse.Namespace) -> int:
    from modeling import registry

    ctx = Context(args)
    version = registry.get_version(ctx.engine, args.model) if args.model else registry.active_version(ctx.engine)
    if version is None:
        raise CliError("no active model version; name one with --model")
    job = ctx.backend.start_transform(version.id, args.input, args.output, actor=ctx.actor)
    print(f"started transform job {job.id} with {version.name} on {job.backend}", flush=True)
    if not _should_wait(args, ctx):
        return EXIT_OK
    job = watch(ctx, job)
    if job.status == "Completed":
        out = job.output
        print(f"{out.get('n_scored', '?')} photos scored, {out.get('n_failed', 0)} failed -> {out.get('output_path')}")
    return _outcome(job)


register(Command("transform", "score a folder (or S3 prefix) of photos into JSON lines with a model version",
                 _transform_arguments, _transform))


# ---------------------------------------------------------------- jobs

def _jobs_arguments(p: argparse.ArgumentParser) -> None:
    from jobs.records import KINDS

    add_common_arguments(p)
    p.add_argument("action", nargs="?", choices=("list", "show", "log", "stop", "resume"), default="list",
                   help="list (default), show JOB, log JOB, stop JOB, resume JOB (a Failed or Stopped local "
                        "training job, from its last checkpoint, as a new job)")
    p.add_argument("job_id", nargs="?", default=None, help="the job for show, log, stop and resume")
    p.add_argument("--kind", choices=KINDS, default=None, help="only jobs of this kind")
    p.add_argument("--limit", type=int, default=30, help="most recent N jobs (default 30)")
    p.add_argument("--refresh", action="store_true", help="poll running jobs first")
    p.add_argument("--lines", type=int, default=50, help="log lines for `log` (default 50)")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                   help="resume: wait for the end and stream progress (default: wait; resumed jobs are local)")


def _job_rows(jobs: list) -> list[list[str]]:
    rows = []
    for j in jobs:
        duration = j.duration_seconds
        rows.append([j.id, j.kind, j.backend, j.status, f"{j.created_at:%Y-%m-%d %H:%M}",
                     f"{duration:.0f}s" if duration is not None else "-",
                     _fmt(j.last_epoch.get("val_accuracy")), _fmt(j.last_epoch.get("val_rmse")),
                     j.output.get("model_version") or "-", (j.failure_reason or "")[:60]])
    return rows


def _show(job) -> None:
    print(f"{job.id}  {job.kind} on {job.backend}: {job.status}")
    for label, value in (("external id", job.external_id), ("parent", job.parent_id), ("pid", job.pid),
                         ("created", job.created_at), ("started", job.started_at), ("ended", job.ended_at),
                         ("log", job.log_path), ("failure", job.failure_reason)):
        if value is not None:
            print(f"  {label}: {value}")
    for row in job.metrics:
        print(f"  {_metric_summary(row)}")
    if job.output:
        print("  output: " + json.dumps(job.output, default=str, indent=2).replace("\n", "\n  "))


@user_errors_exit_2
def _jobs(args: argparse.Namespace) -> int:
    from jobs.backend import refresh_active
    from jobs.store import get_job, list_jobs

    ctx = Context(args)
    if args.action != "list" and not args.job_id:
        raise CliError(f"jobs {args.action} needs a JOB_ID")
    if args.action == "list":
        if args.refresh:
            refresh_active(ctx.engine, settings=ctx.settings, workspace=ctx.workspace)
        jobs = list_jobs(ctx.engine, kind=args.kind, limit=args.limit)
        if not jobs:
            print("no jobs yet")
        else:
            print(_table(["job", "kind", "backend", "status", "created", "time", "val_acc", "val_rmse", "model",
                          "failure"], _job_rows(jobs)))
        return EXIT_OK
    job = get_job(ctx.engine, args.job_id)
    if args.action == "resume":
        return _resume(args, ctx, job)
    backend = ctx.backend_for(job)
    if args.action == "show":
        _show(backend.refresh(job.id) if args.refresh else job)
        for trial in list_jobs(ctx.engine, parent_id=job.id, limit=None):
            print(f"  trial {trial.id}: {trial.status} {_metric_summary(trial.last_epoch)}".rstrip())
    elif args.action == "log":
        print(backend.log_tail(job.id, args.lines), end="")
    else:
        job = backend.stop(job.id, actor=ctx.actor)
        print(f"{job.id}: {job.status}" + (f" ({job.failure_reason})" if job.failure_reason else ""))
    return EXIT_OK


def _resume(args: argparse.Namespace, ctx: Context, job) -> int:
    """Continue a local training job from its checkpoint; watched to the end like `train` unless --no-wait."""
    from jobs.backend import get_backend

    # always the local backend: it alone resumes, and it names what is wrong with a SageMaker job
    local = get_backend("local", settings=ctx.settings, workspace=ctx.workspace, engine=ctx.engine)
    new = local.resume_training(job.id, actor=ctx.actor)
    epoch = new.output.get("resumed_after_epoch")
    print(f"resuming {job.id}" + (f" after epoch {epoch}" if epoch is not None else "") + f" as {new.id}", flush=True)
    return _follow_training(args, ctx, new)


register(Command("jobs", "list jobs (--refresh polls running ones); show, log, stop or resume one",
                 _jobs_arguments, _jobs))


# ---------------------------------------------------------------- models

def _models_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("action", nargs="?", choices=("list", "promote", "compare"), default="list",
                   help="list (default); promote VERSION; compare VERSION with the active one")
    p.add_argument("version", nargs="?", default=None, help="model version for promote / compare, e.g. v3")
    p.add_argument("--force", action="store_true", help="promote even if the candidate is worse")
    p.add_argument("--metric", choices=("val_accuracy", "val_rmse"), default="val_accuracy",
                   help="what decides a promotion (default val_accuracy)")
    p.add_argument("--val", type=Path, default=None,
                   help="validation folder both versions are scored on (default: the candidate's own)")


def _model_rows(versions: list) -> list[list[str]]:
    return [[("* " if v.active else "  ") + v.name, f"{v.created_at:%Y-%m-%d %H:%M}", v.arch, str(v.image_size),
             _fmt(v.val_accuracy), _fmt(v.val_rmse), v.job_id or "-"] for v in versions]


@user_errors_exit_2
def _models(args: argparse.Namespace) -> int:
    from jobs.promotion import compare_with_active, promote
    from modeling import registry

    ctx = Context(args)
    if args.action == "list":
        versions = registry.list_versions(ctx.engine)
        if not versions:
            print("no model versions yet: python -m modeling train ... registers one")
            return EXIT_OK
        print(_table(["version", "created", "arch", "size", "val_acc", "val_rmse", "job"], _model_rows(versions)))
        print("* active")
        return EXIT_OK
    if not args.version:
        raise CliError(f"models {args.action} needs a VERSION (e.g. v3)")
    if args.action == "compare":
        comparison = compare_with_active(ctx.engine, args.version, args.val)
        print(comparison.describe("val_accuracy"))
        print(comparison.describe("val_rmse"))
        return EXIT_OK
    result = promote(ctx.engine, args.version, metric=args.metric, force=args.force, actor=ctx.actor,
                     val_dir=args.val)
    if not result.promoted and not result.version.active:  # refused (worse, or its files are gone): exit 2
        raise CliError(result.reason)
    print(f"{result.version.name}: {'active' if result.version.active else 'not promoted'} ({result.reason})")
    return EXIT_OK


register(Command("models", "list model versions (metrics, active one); promote one after comparing it",
                 _models_arguments, _models))

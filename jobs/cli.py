"""`python -m jobs <command>`: start and follow jobs, serve models, manage model versions.

    python -m jobs train --train D/train --val D/val --epochs 5       local by default; waits, streams the log
    python -m jobs tune --train D/train --val D/val --max-jobs 3       prints the best trial
    python -m jobs list [--refresh] | show JOB | log JOB [--follow] | stop JOB | resume JOB [--no-wait]
    python -m jobs models [list] | models promote v3 [--force] | models compare v3
    python -m jobs deploy v3 | deploy --list | deploy --delete JOB | deploy --delete --idle   endpoints
    python -m jobs invoke JOB --image photo.jpg [--expected-count 3]
    python -m jobs transform --model v3 --input photos/ --output out.jsonl

(`python -m modeling.train` is the training script itself, which a training job runs.) `--backend local|sagemaker`
(default: the `backend` setting, "local"). On SageMaker, train, tune, deploy and transform say what they will run
on and about what it costs, and ask before starting (`--yes` starts without asking). Errors: one line
`error: ...`, exit 2; a job that ended Failed or Stopped exits 1.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from binaudit.config import ConfigError, load_settings
from binaudit.workspace import Workspace
from jobs import follow, get_backend, refresh_active
from jobs.backend import Backend
from jobs.params import OBJECTIVES, STRATEGIES, TrainingParams, TuningParams
from jobs.records import KINDS, JobError, JobRecord
from jobs.sagemaker.prices import paid_work_summary
from jobs.search_space import DEFAULT_SEARCH_SPACE, SearchSpaceError, space_from_json
from jobs.store import get_job, list_jobs
from modeling import registry
from modeling.cli import EXIT_INTERRUPTED, EXIT_OK, CliError, add_path_arguments, run_reporting_errors
from modeling.promotion import compare_with_active, promote
from modeling.settings import JOB_SETTINGS, add_setting_arguments

EXIT_FAILED = 1  # the job ended Failed or Stopped


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one `error: ...` line like every other error, not a usage dump
        raise CliError(message)


class Context:
    """Settings, workspace, database and backend for one command."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.settings = load_settings(workspace=args.workspace)
        self.workspace = Workspace.from_settings(self.settings)
        self.engine = self.workspace.open()
        self.backend_name = args.backend or self.settings.backend
        self.actor = args.actor or _user()
        self._backends: dict[str, Backend] = {}

    @property
    def backend(self) -> Backend:
        """The backend the command asked for (--backend, else the setting)."""
        return self.backend_of(self.backend_name)

    def backend_of(self, name: str) -> Backend:
        """A backend by name (the one a job ran on), set up once per command."""
        if name not in self._backends:
            self._backends[name] = get_backend(name, settings=self.settings, workspace=self.workspace,
                                               engine=self.engine)
        return self._backends[name]

    def version(self, ref: str | None) -> registry.ModelVersion:
        """A named version, else the active one."""
        version = registry.get_version(self.engine, ref) if ref else registry.active_version(self.engine)
        if version is None:
            raise CliError("no active model version; name one (python -m jobs models lists them)")
        return version


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


def _confirm_paid_work(args: argparse.Namespace, ctx: Context, kind: str, **work: Any) -> None:
    """On SageMaker: say what the job runs on and about what it costs, and ask (unless --yes)."""
    if ctx.backend_name != "sagemaker":
        return
    _ = ctx.backend  # a missing region, role or bucket is said before anything is asked
    print(f"This starts {paid_work_summary(ctx.settings, kind, **work)}.", flush=True)
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise CliError("not started: no terminal to ask in; pass --yes to start paid work without asking")
    if input("Start it? [y/N] ").strip().lower() not in ("y", "yes"):
        raise CliError("not started")


def _age(created: Any) -> str:
    if not isinstance(created, dt.datetime):
        return "-"
    created = created if created.tzinfo else created.replace(tzinfo=dt.timezone.utc)
    hours = (dt.datetime.now(dt.timezone.utc) - created).total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def _metric_summary(row: dict[str, Any]) -> str:
    if not row:
        return ""
    return f"epoch {row.get('epoch')}: val_accuracy {_fmt(row.get('val_accuracy'))}, val_rmse {_fmt(row.get('val_rmse'))}"


# ---------------------------------------------------------------- waiting for a job

def watch(ctx: Context, job: JobRecord) -> JobRecord:
    """Poll until the job ends; print the local log as it grows (SageMaker: status and metric changes)."""
    try:
        return follow(ctx.backend_of(job.backend), job,
                      on_log=lambda text: print(text, end="" if text.endswith("\n") else "\n", flush=True),
                      on_change=lambda j: print(f"{j.id}: {j.status} {_metric_summary(j.last_epoch)}".rstrip(),
                                                flush=True))
    except KeyboardInterrupt:
        print(f"\nstopped watching; {job.id} keeps running (python -m jobs stop {job.id} stops it)", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None


def _started(args: argparse.Namespace, ctx: Context, job: JobRecord, what: str = "",
             report: Callable[[JobRecord], str | None] | None = None) -> int:
    """Print the started job. When the command waits for it: watch it to the end, print `report(job)` (a line or
    None), and return EXIT_FAILED with a one-line error for a job that ended Failed or Stopped."""
    print(f"started {job.kind} job {job.id}{what} on {job.backend}"
          + (f" ({job.external_id})" if job.external_id else ""), flush=True)
    if not _waits(args, job.backend):
        print(f"follow it with: python -m jobs show {job.id} --refresh")
        return EXIT_OK
    job = watch(ctx, job)
    line = report(job) if report is not None else None
    if line:
        print(line)
    return _outcome(job)


def _outcome(job: JobRecord) -> int:
    if job.status == "Completed":
        return EXIT_OK
    print(f"error: job {job.id} {job.status}" + (f": {job.failure_reason}" if job.failure_reason else ""),
          file=sys.stderr)
    return EXIT_FAILED


def _waits(args: argparse.Namespace, backend_name: str) -> bool:
    """--wait/--no-wait, else wait for local jobs (minutes) and not for SageMaker's (they are polled)."""
    return args.wait if args.wait is not None else backend_name == "local"


def _registered(ctx: Context, job: JobRecord) -> str | None:
    """The model version a completed training job registered."""
    if job.status != "Completed":
        return None
    if job.model_version_id is None:
        return f"job {job.id} {job.status}; no model version registered"
    version = registry.get_version(ctx.engine, job.model_version_id)
    hint = "" if version.active else f"\nnot active yet: python -m jobs models promote {version.name}"
    return (f"registered model version {version.name} (val accuracy {_fmt(version.val_accuracy)}, "
            f"val RMSE {_fmt(version.val_rmse)}) from job {job.id}{hint}")


# ---------------------------------------------------------------- train, tune, resume

def training_params(args: argparse.Namespace) -> TrainingParams:
    """The job's parameters from the flags given (the others keep the settings' defaults)."""
    values = {s.name: getattr(args, s.name) for s in JOB_SETTINGS if getattr(args, s.name) is not None}
    extra = {}
    for item in args.extra:
        name, sep, value = item.partition("=")
        if not sep or not name.strip("-"):
            raise CliError(f"--extra takes FLAG=VALUE, got {item!r}")
        extra[name.strip().lstrip("-")] = value
    channels = {k: getattr(args, k) for k in ("train", "val", "test", "recounts") if getattr(args, k)}
    compute = {k: getattr(args, k) for k in ("instance_type", "instance_count") if getattr(args, k) is not None}
    return TrainingParams(**channels, **values, **compute, extra=extra)


def _train(args: argparse.Namespace, ctx: Context) -> int:
    params = training_params(args)
    _confirm_paid_work(args, ctx, "training", instance_type=params.instance_type, instance_count=params.instance_count)
    job = ctx.backend.start_training(params, actor=ctx.actor)
    return _started(args, ctx, job, report=lambda ended: _registered(ctx, ended))


def _resume(args: argparse.Namespace, ctx: Context) -> int:
    """Continue a local training job from its checkpoint; watched to the end like `train` unless --no-wait."""
    job = get_job(ctx.engine, args.job_id)
    # always the local backend: it alone resumes, and it names what is wrong with a SageMaker job
    new = ctx.backend_of("local").resume_training(job.id, actor=ctx.actor)
    epoch = new.output.get("resumed_after_epoch")
    print(f"resuming {job.id}" + (f" after epoch {epoch}" if epoch is not None else "") + f" as {new.id}", flush=True)
    return _started(args, ctx, new, report=lambda ended: _registered(ctx, ended))


def _search_space(text: str | None):
    if text is None:
        return dict(DEFAULT_SEARCH_SPACE)
    path = Path(text)
    raw = path.read_text(encoding="utf-8") if not text.lstrip().startswith("{") and path.is_file() else text
    try:
        return space_from_json(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise CliError(f"--search-space is not valid JSON ({exc})") from None


def _tune(args: argparse.Namespace, ctx: Context) -> int:
    params = TuningParams(base=training_params(args), search_space=_search_space(args.search_space),
                          objective=args.objective, max_jobs=args.max_jobs, max_parallel_jobs=args.max_parallel_jobs,
                          strategy=args.strategy, early_stopping=args.early_stopping, seed=args.tuning_seed)
    _confirm_paid_work(args, ctx, "tuning", instance_type=params.base.instance_type,
                       instance_count=params.base.instance_count, max_jobs=params.max_jobs)
    return _started(args, ctx, ctx.backend.start_tuning(params, actor=ctx.actor), report=_best_trial)


def _best_trial(job: JobRecord) -> str | None:
    best = job.output.get("best_trial")
    if not best:
        return None
    return (f"best trial: {best.get('job_id') or best.get('training_job_name')} "
            f"{job.output.get('objective')}={_fmt(best.get('value'))} {json.dumps(best.get('values') or {})}"
            + (f" -> model version {best['model_version']}" if best.get("model_version") else ""))


# ---------------------------------------------------------------- list, show, log, stop

def _list(args: argparse.Namespace, ctx: Context) -> None:
    if args.refresh:
        refresh_active(ctx.engine, settings=ctx.settings, workspace=ctx.workspace)
    jobs = list_jobs(ctx.engine, kind=args.kind, limit=args.limit)
    if not jobs:
        print("no jobs yet")
        return
    rows = [[j.id, j.kind, j.backend, j.status, f"{j.created_at:%Y-%m-%d %H:%M}",
             f"{j.duration_seconds:.0f}s" if j.duration_seconds is not None else "-",
             _fmt(j.last_epoch.get("val_accuracy")), _fmt(j.last_epoch.get("val_rmse")),
             j.output.get("model_version") or "-", (j.failure_reason or "")[:60]] for j in jobs]
    print(_table(["job", "kind", "backend", "status", "created", "time", "val_acc", "val_rmse", "model", "failure"],
                 rows))


def _show(args: argparse.Namespace, ctx: Context) -> None:
    job = get_job(ctx.engine, args.job_id)
    job = ctx.backend_of(job.backend).refresh(job.id) if args.refresh else job
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
    for trial in list_jobs(ctx.engine, parent_id=job.id, limit=None):
        print(f"  trial {trial.id}: {trial.status} {_metric_summary(trial.last_epoch)}".rstrip())


def _log(args: argparse.Namespace, ctx: Context) -> None:
    job = get_job(ctx.engine, args.job_id)
    backend = ctx.backend_of(job.backend)
    if not args.follow:
        print(backend.log_tail(job.id, args.lines), end="")
        return
    try:  # the whole log, then new lines as they arrive, until the job ends
        follow(backend, job, on_log=lambda text: print(text, end="", flush=True), poll_seconds=args.poll)
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED) from None


def _stop(args: argparse.Namespace, ctx: Context) -> None:
    job = get_job(ctx.engine, args.job_id)
    job = ctx.backend_of(job.backend).stop(job.id, actor=ctx.actor)
    print(f"{job.id}: {job.status}" + (f" ({job.failure_reason})" if job.failure_reason else ""))


# ---------------------------------------------------------------- models

def _classes_text(classes) -> str:
    """"0-5" for a closed model, "0-5,6+" for an open one."""
    return f"0-{classes.max_count}" + (f",{classes.labels[-1]}" if classes.open_top else "")


def _models(args: argparse.Namespace, ctx: Context) -> None:
    if args.action == "list":
        versions = registry.list_versions(ctx.engine)
        if not versions:
            print("no model versions yet: python -m jobs train ... registers one")
            return
        rows = [[("* " if v.active else "  ") + v.name, f"{v.created_at:%Y-%m-%d %H:%M}", v.arch, str(v.image_size),
                 _classes_text(v.classes), _fmt(v.val_accuracy), _fmt(v.val_rmse), v.job_id or "-"] for v in versions]
        print(_table(["version", "created", "arch", "size", "classes", "val_acc", "val_rmse", "job"], rows))
        print("* active")
        return
    if not args.version:
        raise CliError(f"models {args.action} needs a VERSION (e.g. v3)")
    if args.action == "compare":
        comparison = compare_with_active(ctx.engine, args.version, args.val)
        print(comparison.describe("val_accuracy"))
        print(comparison.describe("val_rmse"))
        return
    result = promote(ctx.engine, args.version, metric=args.metric, force=args.force, actor=ctx.actor,
                     val_dir=args.val)
    if not result.promoted and not result.version.active:  # refused (worse, or its files are gone): exit 2
        raise CliError(result.reason)
    print(f"{result.version.name}: {'active' if result.version.active else 'not promoted'} ({result.reason})")


# ---------------------------------------------------------------- deploy, invoke, transform

def _deploy(args: argparse.Namespace, ctx: Context) -> int | None:
    if args.list:
        return _list_endpoints(ctx)
    if args.delete is not None:
        return _delete_endpoints(args, ctx)
    version = ctx.version(args.version)
    _confirm_paid_work(args, ctx, "deployment")
    waits = _waits(args, ctx.backend_name)
    progress = {"on_progress": lambda j: print(f"{j.id}: endpoint {j.output.get('endpoint_status', j.status)} "
                                               f"({_age(j.created_at)} so far)", flush=True)} if waits and \
        ctx.backend_name == "sagemaker" else {}
    job = ctx.backend.deploy(version.id, actor=ctx.actor, wait=waits, **progress, **_scoring_path(args, ctx))
    where = job.output.get("endpoint_url") or job.output.get("endpoint_name") or "starting"
    print(f"deployment {job.id}: {version.name} -> {where} ({job.output.get('endpoint_status', job.status)})")
    if job.backend == "sagemaker":
        print(f"it bills until deleted: python -m jobs deploy --backend sagemaker --delete {job.id}")
    else:
        print(f"stop it with: python -m jobs deploy --delete {job.id}")
    return _outcome(job) if not job.is_active else EXIT_OK


def _list_endpoints(ctx: Context) -> None:
    endpoints = ctx.backend.list_endpoints()
    if not endpoints:
        print("no live endpoints")
        return
    rows = [[e["name"] + (" (idle)" if e.get("idle") else ""), e.get("status") or "-",
             e.get("url") or e.get("instance_type") or "-", e.get("model_version") or "-",
             e.get("job_id") or "(not BinAudit's)", _age(e.get("created_at")), _fmt(e.get("last_invocation"))]
            for e in endpoints]
    print(_table(["endpoint", "status", "url / instance", "model", "job", "age", "last invocation"], rows))
    idle = [e["name"] for e in endpoints if e.get("idle")]
    if idle:
        print(f"warning: {len(idle)} endpoint(s) had no invocation for {ctx.settings.endpoint_idle_hours:g} h and "
              f"still bill every hour: {', '.join(idle)}; python -m jobs deploy --backend {ctx.backend_name} "
              f"--delete --idle deletes BinAudit's", file=sys.stderr)


def _delete_endpoints(args: argparse.Namespace, ctx: Context) -> None:
    if args.idle == bool(args.delete):
        raise CliError("deploy --delete takes an endpoint (job id, URL or endpoint name) or --idle, not both")
    names = [e["job_id"] for e in ctx.backend.list_endpoints() if e.get("idle") and e.get("job_id")] \
        if args.idle else [args.delete]
    if args.idle and not names:
        print(f"no idle BinAudit endpoints (idle: no invocation for {ctx.settings.endpoint_idle_hours:g} h)")
    for name in names:
        job = ctx.backend.delete_endpoint(name, actor=ctx.actor)
        print(f"deleted endpoint {name}" + (f" (job {job.id} {job.status})" if job is not None else ""))


def _request_body(args: argparse.Namespace) -> tuple[bytes, str]:
    if args.image is not None:
        data = args.image.read_bytes()
        if args.expected_count is None:
            return data, "image/png" if args.image.suffix.lower() == ".png" else "image/jpeg"
        doc = {"image": base64.b64encode(data).decode("ascii"), "expected_count": args.expected_count}
        return json.dumps(doc).encode("utf-8"), "application/json"
    if args.body is not None:
        kind = args.content_type or {".json": "application/json", ".png": "image/png"}.get(
            args.body.suffix.lower(), "image/jpeg")
        return args.body.read_bytes(), kind
    raise CliError("give --image PHOTO or --body FILE")


def _invoke(args: argparse.Namespace, ctx: Context) -> None:
    body, content_type = _request_body(args)
    print(json.dumps(ctx.backend.invoke(args.endpoint, body, content_type), indent=2))


def _transform(args: argparse.Namespace, ctx: Context) -> int:
    version = ctx.version(args.model)
    _confirm_paid_work(args, ctx, "transform")
    job = ctx.backend.start_transform(version.id, args.input, args.output, actor=ctx.actor, **_scoring_path(args, ctx))
    return _started(args, ctx, job, f" with {version.name}", report=_scored)


def _scored(job: JobRecord) -> str | None:
    if job.status != "Completed":
        return None
    out = job.output
    return f"{out.get('n_scored', '?')} photos scored, {out.get('n_failed', 0)} failed -> {out.get('output_path')}"


def _scoring_path(args: argparse.Namespace, ctx: Context) -> dict[str, str]:
    """--runtime/--precision for a local job; SageMaker's container scores with torch, as its model_fn says."""
    if ctx.backend_name == "local":
        return {"runtime": args.runtime, "precision": args.precision}
    if (args.runtime, args.precision) != ("auto", "auto"):
        raise JobError("--runtime and --precision choose how the local backend scores; SageMaker's container "
                       "scores with torch")
    return {}


# ---------------------------------------------------------------- the parser

STREAMS = "wait for the end and stream progress"


def _training_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", default=None, help="training folder of <count>/<image> (local) or s3:// prefix")
    p.add_argument("--val", default=None, help="validation folder or s3:// prefix")
    p.add_argument("--test", default=None, help="optional test folder or s3:// prefix")
    p.add_argument("--recounts", default=None,
                   help="analysts' recounts as a training folder (python -m audit export recounts --out DIR); "
                        "recounts of bins in val or test are left out")
    add_setting_arguments(p, JOB_SETTINGS, defaults=False)
    p.add_argument("--instance-type", default=None, help="SageMaker: training instance type (default: the setting)")
    p.add_argument("--instance-count", type=int, default=None,
                   help="SageMaker: instances per job, > 1 runs DistributedDataParallel (default: the setting)")
    p.add_argument("--extra", action="append", default=[], metavar="FLAG=VALUE",
                   help="another train.py flag, e.g. --extra device=cpu (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--backend", choices=("local", "sagemaker"), default=None,
                        help="where jobs run (default: the backend setting, BINAUDIT_BACKEND; normally local)")
    common.add_argument("--workspace", type=Path, default=None, help="workspace folder (default: the setting)")
    common.add_argument("--actor", default=None, help="who is acting, for the audit log (default: your user name)")

    parser = _Parser(prog="python -m jobs", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, run, help: str, *positionals: str, wait: str = "", paid: bool = False
                ) -> argparse.ArgumentParser:
        """A subcommand: the common flags, `positionals`, --wait/--no-wait (`wait` says what waiting does), and
        --yes for paid work."""
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(run=run)
        for positional in positionals:
            p.add_argument(positional)
        if wait:
            p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                           help=f"{wait} (default: wait for local jobs, not for SageMaker's)")
        if paid:
            p.add_argument("--yes", action="store_true", help="SageMaker: start paid work without asking")
        return p

    _training_flags(command("train", _train, "start a training job (local by default) and register the model it makes",
                            wait=STREAMS, paid=True))

    p = command("tune", _tune, "start a hyperparameter tuning job over the shared search space; reports the best",
                wait=STREAMS, paid=True)
    _training_flags(p)
    p.add_argument("--max-jobs", type=int, default=4, help="number of trials (default 4)")
    p.add_argument("--max-parallel-jobs", type=int, default=1,
                   help="trials at a time (default 1; the local backend runs at most 2)")
    p.add_argument("--objective", choices=tuple(OBJECTIVES), default="val_accuracy",
                   help="val_accuracy (maximised) or val_rmse (minimised)")
    p.add_argument("--strategy", choices=STRATEGIES, default="bayesian", help="how trials are drawn")
    p.add_argument("--search-space", default=None,
                   help="JSON object (or a file holding one) of parameter -> {type, low, high, log | values}; "
                        "default: lr, weight_decay (log), batch_size, arch, image_size, loss")
    p.add_argument("--early-stopping", action="store_true", help="stop trials that fall behind (SageMaker: Auto)")
    p.add_argument("--tuning-seed", type=int, default=0, help="seed of the trial sampler (local)")

    p = command("list", _list, "list jobs, newest first (--refresh polls running ones first)")
    p.add_argument("--kind", choices=KINDS, default=None, help="only jobs of this kind")
    p.add_argument("--limit", type=int, default=30, help="most recent N jobs (default 30)")
    p.add_argument("--refresh", action="store_true", help="poll running jobs first")
    p = command("show", _show, "one job: status, times, per-epoch metrics, output, trials", "job_id")
    p.add_argument("--refresh", action="store_true", help="poll the job first")
    p = command("log", _log, "the end of a job's log (SageMaker: CloudWatch), or --follow it as it grows", "job_id")
    p.add_argument("--lines", type=int, default=50, help="log lines (default 50)")
    p.add_argument("--follow", action="store_true", help="print the log and then new lines until the job ends")
    p.add_argument("--poll", type=float, default=None, help="seconds between polls with --follow (default: 1 "
                                                            "local, 30 SageMaker)")
    command("stop", _stop, "stop a training, tuning or transform job, or delete an endpoint", "job_id")
    command("resume", _resume, "continue a Failed or Stopped local training job from its checkpoint, as a new job",
            "job_id", wait=STREAMS)

    p = command("models", _models, "list model versions (metrics, active one); promote one after comparing it")
    p.add_argument("action", nargs="?", choices=("list", "promote", "compare"), default="list",
                   help="list (default); promote VERSION; compare VERSION with the active one")
    p.add_argument("version", nargs="?", default=None, help="model version for promote / compare, e.g. v3")
    p.add_argument("--force", action="store_true", help="promote even if the candidate is worse")
    p.add_argument("--metric", choices=("val_accuracy", "val_rmse"), default="val_accuracy",
                   help="what decides a promotion (default val_accuracy)")
    p.add_argument("--val", type=Path, default=None,
                   help="validation folder both versions are scored on (default: the candidate's own)")

    p = command("deploy", _deploy, "deploy a model version to an endpoint; --list live endpoints; --delete one",
                wait="wait until the endpoint answers, reporting its status", paid=True)
    p.add_argument("version", nargs="?", default=None, help="model version to deploy, e.g. v3 (default: the active one)")
    p.add_argument("--delete", metavar="ENDPOINT", nargs="?", const="", default=None,
                   help="delete an endpoint (job id, local URL or SageMaker endpoint name) instead; with --idle "
                        "and no name: every BinAudit endpoint flagged idle")
    p.add_argument("--idle", action="store_true", help="with --delete: the idle BinAudit endpoints")
    p.add_argument("--list", action="store_true", help="list live endpoints instead (SageMaker: all in the region, "
                                                       "with instance type, age, last invocation; idle ones flagged)")
    add_path_arguments(p)
    p = command("invoke", _invoke, "send a photo to an endpoint and print its JSON answer")
    p.add_argument("endpoint", help="deployment job id, local URL or SageMaker endpoint name")
    p.add_argument("--image", type=Path, default=None, help="a JPEG or PNG photo to count")
    p.add_argument("--expected-count", type=int, default=None, help="the stock record, for a mismatch probability")
    p.add_argument("--body", type=Path, default=None, help="send this file as the body instead")
    p.add_argument("--content-type", default=None, help="content type of --body (default from the file name)")
    p = command("transform", _transform, "score a folder (or S3 prefix) of photos into JSON lines with a model version",
                wait="wait for the end", paid=True)
    p.add_argument("--model", default=None, help="model version, e.g. v3 (default: the active one)")
    p.add_argument("--input", required=True, help="folder of photos (local) or s3:// prefix (SageMaker)")
    p.add_argument("--output", default=None,
                   help="JSON-lines file or folder (local) or s3:// prefix (SageMaker); default: the job's folder")
    add_path_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        args = build_parser().parse_args(argv)
        return args.run(args, Context(args)) or EXIT_OK  # a handler that returns None succeeded

    return run_reporting_errors(run, (ConfigError, JobError, registry.RegistryError, SearchSpaceError))

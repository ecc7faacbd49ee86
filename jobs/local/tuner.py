"""Local hyperparameter tuning: trials of train.py over the shared search space, one or two at a time.

Strategies: random draws each parameter independently (seeded by TuningParams.seed); bayesian is a Bayesian-like
local search, not a Gaussian process: the first max(2, max_jobs // 3) trials are random, each later one draws around
the best finished trial (Gaussian steps in the log-scaled unit range; a category keeps the best value ~70% of the
time). Each trial is a training job (parent_id: the tuning job) that registers a model version; its objective is its
best epoch's value, as on SageMaker. Early stopping stops a trial whose objective after an epoch is worse than the
finished trials' median at that epoch, as SageMaker's "Auto" does.
"""

from __future__ import annotations

import os
import random
import statistics
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from sqlalchemy.engine import Engine

from binaudit.workspace import Workspace
from jobs import store
from jobs.jobdirs import LOG_FILES, job_dir
from jobs.local.processes import STOP, say
from jobs.local.training import EarlyStopRule, run_train_process
from jobs.params import TuningParams, trial_value
from jobs.records import JobRecord
from jobs.search_space import sample_near, sample_random


def initial_random_trials(max_jobs: int) -> int:
    return max(2, max_jobs // 3)


def next_values(tp: TuningParams, rng: random.Random, finished: list[JobRecord]) -> dict[str, Any]:
    """The next trial's parameters under the tuning job's strategy."""
    scored = [(trial_value(t.metrics, tp.objective), t) for t in finished if t.status == "Completed"]
    scored = [(v, t) for v, t in scored if v is not None]
    if tp.strategy == "random" or len(scored) < initial_random_trials(tp.max_jobs):
        return sample_random(tp.search_space, rng)
    best_value, best = scored[0]
    for value, trial in scored[1:]:
        if tp.is_better(value, best_value):
            best_value, best = value, trial
    return sample_near(tp.search_space, best.params["trial"]["values"], rng)


def _best_up_to(metrics: list[dict[str, Any]], epoch: int, objective: str) -> float | None:
    return trial_value([m for m in metrics if m.get("epoch", 0) <= epoch], objective)


def median_rule(tp: TuningParams, finished: list[JobRecord]) -> EarlyStopRule:
    """Stop a trial whose best-so-far objective is worse than the finished trials' median at the same epoch."""
    histories = [t.metrics for t in finished if t.status == "Completed" and t.metrics]

    def check(metrics: list[dict[str, Any]]) -> str | None:
        if not metrics or len(histories) < 2:
            return None
        epoch = int(metrics[-1].get("epoch", 0))
        others = [v for v in (_best_up_to(h, epoch, tp.objective) for h in histories) if v is not None]
        mine = _best_up_to(metrics, epoch, tp.objective)
        if mine is None or len(others) < 2:
            return None
        median = statistics.median(others)
        if tp.is_better(median, mine) and median != mine:
            return f"stopped early: {tp.objective} {mine:.4f} after epoch {epoch} is worse than the median {median:.4f}"
        return None

    return check


def _create_trial(engine: Engine, workspace: Workspace, parent: JobRecord, tp: TuningParams, number: int,
                  values: dict[str, Any]) -> JobRecord:
    params = tp.trial_params(values)  # the tuning job's channels (recounts included), these values
    job_id = store.new_job_id("training")
    trial = store.create_job(
        engine, kind="training", backend="local", parent_id=parent.id, job_id=job_id,
        params={"training": params.to_dict(), "trial": {"number": number, "values": values}},
        actor=parent.output.get("requested_by", "system"),
        log_path=str(job_dir(workspace, job_id) / LOG_FILES["training"]),
        output={"requested_by": parent.output.get("requested_by", "system"), "runner_pid": os.getpid()},
    )
    return store.mark_started(engine, trial.id)


def summarize(tp: TuningParams, trials: list[JobRecord]) -> dict[str, Any]:
    """The tuning job's output: every trial's value and the best one."""
    rows, best = [], None
    for t in sorted(trials, key=lambda t: t.params["trial"]["number"]):
        value = trial_value(t.metrics, tp.objective) if t.status == "Completed" else None
        row = {"job_id": t.id, "number": t.params["trial"]["number"], "status": t.status, "value": value,
               "values": t.params["trial"]["values"], "model_version_id": t.model_version_id,
               "model_version": t.output.get("model_version")}
        rows.append(row)
        if value is not None and (best is None or tp.is_better(value, best["value"])):
            best = row
    out: dict[str, Any] = {"objective": tp.objective, "objective_type": tp.objective_type, "trials": rows,
                           "best_trial": best}
    if best is not None:
        out.update(model_version_id=best["model_version_id"], model_version=best["model_version"])
    return out


def run_tuning(engine: Engine, workspace: Workspace, job: JobRecord) -> JobRecord:
    tp = TuningParams.from_dict(job.params["tuning"])
    rng = random.Random(tp.seed)
    say(f"tuning {tp.objective} ({tp.objective_type}) over {', '.join(sorted(tp.search_space))}: "
        f"{tp.max_jobs} trials, {tp.max_parallel_jobs} at a time, {tp.strategy}")
    finished: list[JobRecord] = []
    running: set[Future] = set()
    launched = 0
    with ThreadPoolExecutor(max_workers=tp.max_parallel_jobs) as pool:
        while True:
            while launched < tp.max_jobs and len(running) < tp.max_parallel_jobs and not STOP.is_set():
                values = next_values(tp, rng, finished)
                launched += 1
                trial = _create_trial(engine, workspace, job, tp, launched, values)
                say(f"trial {launched}: {trial.id} {values}")
                rule = median_rule(tp, finished) if tp.early_stopping else None
                running.add(pool.submit(run_train_process, engine, workspace, trial, early_stop=rule))
            if not running:
                break
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                trial = future.result()
                finished.append(trial)
                value = trial_value(trial.metrics, tp.objective)
                say(f"trial {trial.params['trial']['number']}: {trial.id} {trial.status}"
                    + (f" {tp.objective}={value:.4f}" if value is not None else "")
                    + (f" ({trial.failure_reason})" if trial.failure_reason else ""))
    trials = store.list_jobs(engine, parent_id=job.id, limit=None)
    output = summarize(tp, trials)
    if STOP.is_set():
        return store.finish_job(engine, job.id, "Stopped", failure_reason="stopped on request", output=output)[0]
    if output["best_trial"] is None:
        reasons = [t.failure_reason for t in trials if t.failure_reason]
        reason = f"none of the {len(trials)} trials completed" + (f"; first failure: {reasons[0]}" if reasons else "")
        return store.finish_job(engine, job.id, "Failed", failure_reason=reason, output=output)[0]
    best = output["best_trial"]
    say(f"best trial: {best['job_id']} {tp.objective}={best['value']:.4f} -> model {best['model_version']}")
    return store.finish_job(engine, job.id, "Completed", output=output)[0]

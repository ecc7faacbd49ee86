"""CloudWatch for the SageMaker backend: where a job logs and reading it (the newest stream's tail, a training job's
whole log, new lines as they arrive), and when an endpoint was last invoked (its Invocations metric).

    training     /aws/sagemaker/TrainingJobs              <job>/algo-<n>-<epoch seconds>   (a spot restart adds a
                                                                                       stream per host)
    tuning       /aws/sagemaker/TrainingJobs              <tuning job>-<NNN>-<hash>/...   (its trials' own streams)
    transform    /aws/sagemaker/TransformJobs             <job>/<instance id>[/data-log]
    endpoint     /aws/sagemaker/Endpoints/<EndpointName>  AllTraffic/<instance id>

A group that does not exist yet (nothing logged so far) reads as no streams.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from jobs.sagemaker.aws import error_code

EVENTS_PER_CALL = 10_000  # get_log_events' own maximum


@dataclass(frozen=True)
class LogSource:
    group: str
    prefix: str


def log_source(kind: str, name: str) -> LogSource:
    if kind == "deployment":
        return LogSource(f"/aws/sagemaker/Endpoints/{name}", "AllTraffic/")
    if kind == "transform":
        return LogSource("/aws/sagemaker/TransformJobs", f"{name}/")
    # a tuning job's trials are named <tuning job>-NNN-<hash>: their streams share the prefix
    return LogSource("/aws/sagemaker/TrainingJobs", f"{name}/" if kind == "training" else f"{name}-")


def list_streams(logs: Any, source: LogSource) -> list[dict[str, Any]]:
    """Every stream of the source, oldest first (by creation time)."""
    streams: list[dict[str, Any]] = []
    try:
        for page in logs.get_paginator("describe_log_streams").paginate(logGroupName=source.group,
                                                                        logStreamNamePrefix=source.prefix):
            streams.extend(page.get("logStreams", []))
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return []
        raise
    return sorted(streams, key=lambda s: (s.get("creationTime", 0), s["logStreamName"]))


def _last_activity(stream: dict[str, Any]) -> int:
    return max(stream.get("lastEventTimestamp") or 0, stream.get("creationTime") or 0)


def _events(logs: Any, group: str, stream: str, **kwargs: Any) -> dict[str, Any]:
    return logs.get_log_events(logGroupName=group, logStreamName=stream, limit=EVENTS_PER_CALL, **kwargs)


def _text(events: list[dict[str, Any]]) -> str:
    return "".join(e["message"].rstrip("\n") + "\n" for e in events)


def tail(logs: Any, source: LogSource, lines: int) -> str:
    """The last lines of the newest stream (after a spot restart, the restarted run's)."""
    streams = list_streams(logs, source)
    if not streams:
        return ""
    newest = max(streams, key=_last_activity)["logStreamName"]
    events = _events(logs, source.group, newest, startFromHead=False)["events"]
    return _text(events[-lines:])


def first_host_text(logs: Any, source: LogSource) -> str:
    """A training job's log as its first host (rank 0, which prints the metrics) wrote it, restarts in order."""
    streams = [s["logStreamName"] for s in list_streams(logs, source)]
    hosts = sorted({name[len(source.prefix):].rsplit("-", 1)[0] for name in streams})
    first = [name for name in streams if hosts and name[len(source.prefix):].rsplit("-", 1)[0] == hosts[0]]
    return "".join(_text(_events(logs, source.group, name, startFromHead=True)["events"]) for name in first)


@dataclass
class LogFollower:
    """New log lines of a source since the last call, across its streams (new streams are picked up)."""

    logs: Any
    source: LogSource
    tokens: dict[str, str] = field(default_factory=dict)

    def new_text(self) -> str:
        streams = list_streams(self.logs, self.source)
        several = len({s["logStreamName"].split("/", 1)[0] for s in streams}) > 1  # tuning: say which trial
        out = []
        for stream in streams:
            name = stream["logStreamName"]
            kwargs = {"nextToken": self.tokens[name]} if name in self.tokens else {"startFromHead": True}
            page = _events(self.logs, self.source.group, name, **kwargs)
            self.tokens[name] = page.get("nextForwardToken") or self.tokens.get(name, "")
            text = _text(page.get("events", []))
            if several and text:
                trial = name.split("/", 1)[0]
                text = "".join(f"[{trial}] {line}\n" for line in text.splitlines())
            out.append(text)
        return "".join(out)


def last_invocation(cloudwatch: Any, endpoint: str, now: dt.datetime, days: int = 14) -> dt.datetime | None:
    """The end of the newest hour in which the endpoint was invoked in the last `days` (CloudWatch's
    AWS/SageMaker Invocations metric, by the hour; this hour included), None when it was not."""
    points = cloudwatch.get_metric_statistics(
        Namespace="AWS/SageMaker", MetricName="Invocations", Period=3600, Statistics=["Sum"],
        Dimensions=[{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": "AllTraffic"}],
        StartTime=now - dt.timedelta(days=days), EndTime=now + dt.timedelta(hours=1))["Datapoints"]
    used = [p["Timestamp"] for p in points if p.get("Sum")]
    return min(max(used) + dt.timedelta(hours=1), now) if used else None

"""The model registry: versions of the counting model in the project database, one of them active.

Every completed training job registers a version: its model folder is copied (hard-linked where
the filesystem allows) into the workspace's model store, so a version stays loadable when the job's
folder is cleaned up, and its config and metrics are recorded. The active version is the one the
dashboard and `audit score` use. Promotion with a comparison on shared validation data lives
in `modeling.promotion`; this module only records facts.

Not container code: it uses SQLAlchemy and is never imported by train.py or inference.py.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from binaudit import db
from modeling.counts import CountClasses

ACTIVE_KEY = "active_model_version"
MODEL_FILES = ("model.pth", "model_config.json", "metrics.json", "summary.csv", "args.json")
# what `python -m modeling check` adds beside them (local scoring only: SageMaker's container never reads these)
LOCAL_SCORING_FILES = ("model.onnx", "model.int8.onnx", "scoring_paths.json")


class RegistryError(LookupError):
    """A version that does not exist or a model folder that cannot be registered."""


@dataclass(frozen=True)
class ModelVersion:
    id: int
    name: str
    job_id: str | None
    artifact_uri: str
    arch: str
    image_size: int
    max_count: int
    config: dict[str, Any]
    metrics: dict[str, Any]
    val_accuracy: float | None
    val_rmse: float | None
    dataset_fingerprint: str | None
    manifest_sha256: str | None
    created_at: dt.datetime
    promoted_at: dt.datetime | None
    active: bool = False

    @property
    def model_dir(self) -> Path:
        return Path(self.artifact_uri)

    @property
    def classes(self) -> CountClasses:
        """What the version's classes mean (exact 0..max_count, and "max_count + 1 or more" when open)."""
        return CountClasses.from_config({"max_count": self.max_count, **self.config})


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(src, dst)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, a 5,000-digit integer, absurd nesting
        raise RegistryError(f"{path} is not valid JSON ({str(exc).split(';')[0] or 'nested too deeply'})") from None


def _json_safe(value: Any) -> Any:
    """`value` with NaN and infinities as None: metrics.json writes NaN for a class with no images (an open model's
    "6+" in a small validation split), which JSON has no word for and PostgreSQL's JSON type refuses."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _final_metric(config: dict[str, Any], metrics: dict[str, Any], name: str) -> float | None:
    value = (config.get("final_metrics") or {}).get(name)
    if value is None:
        value = (metrics.get("final") or {}).get(name.removeprefix("val_"))
    return float(value) if isinstance(value, (int, float)) else None


def _check_spec(model_dir: Path, config: dict[str, Any]) -> None:
    """A version must load later: its config is checked now (arch, classes, image size within bounds)."""
    from modeling.model import ModelConfigError, ModelSpec  # torch: only registering needs it, not every reader

    if not isinstance(config, dict):
        raise RegistryError(f"{model_dir / 'model_config.json'} holds {type(config).__name__}, not an object")
    try:
        ModelSpec.from_dict(config)
    except ModelConfigError as exc:
        raise RegistryError(f"{model_dir / 'model_config.json'}: {exc}") from None


def register_model(engine: Engine, model_dir: Path, store: Path, *, job_id: str | None = None,
                   actor: str = "system", extra_config: dict[str, Any] | None = None) -> ModelVersion:
    """Record `model_dir` (a folder written by modeling.train) as a new version, stored under `store`."""
    config = _read_json(model_dir / "model_config.json")
    if not config or not (model_dir / "model.pth").is_file():
        raise RegistryError(f"{model_dir} is not a trained model folder (needs model.pth and model_config.json)")
    _check_spec(model_dir, config)
    metrics = _json_safe(_read_json(model_dir / "metrics.json"))
    config = _json_safe({**config, **(extra_config or {})})
    with db.write_tx(engine) as conn:
        next_id = (conn.execute(sa.select(sa.func.max(db.model_versions.c.id))).scalar() or 0) + 1
        name = f"v{next_id}"
        dest = store / name
        if dest.exists():
            shutil.rmtree(dest)  # left by a registration whose transaction rolled back
        dest.mkdir(parents=True)
        for file in (*MODEL_FILES, *LOCAL_SCORING_FILES):
            if (model_dir / file).is_file():
                _link_or_copy(str(model_dir / file), str(dest / file))
        result = conn.execute(db.model_versions.insert().values(
            name=name, job_id=job_id, artifact_uri=str(dest.resolve()), arch=config.get("arch", "?"),
            image_size=int(config.get("image_size", 0)), max_count=int(config.get("max_count", 0)),
            config=config, metrics=metrics, val_accuracy=_final_metric(config, metrics, "val_accuracy"),
            val_rmse=_final_metric(config, metrics, "val_rmse"),
            dataset_fingerprint=config.get("dataset_fingerprint"), manifest_sha256=config.get("manifest_sha256"),
            created_at=db.utcnow(),
        ))
        version_id = result.inserted_primary_key[0]
        db.log_change(conn, actor=actor, action="register_model", entity="model", entity_id=version_id,
                      details={"name": name, "job_id": job_id, "source": str(model_dir)})
    return get_version(engine, version_id)


def _row_to_version(row: Any, active_id: int | None) -> ModelVersion:
    fields = {k: row[k] for k in ModelVersion.__dataclass_fields__ if k != "active"}
    return ModelVersion(**fields, active=row["id"] == active_id)


def _active_id(conn: sa.Connection) -> int | None:
    value = db.get_state(conn, ACTIVE_KEY)
    return int(value) if value is not None else None


def list_versions(engine: Engine) -> list[ModelVersion]:
    """All versions, newest first."""
    with engine.connect() as conn:
        active = _active_id(conn)
        rows = conn.execute(sa.select(db.model_versions).order_by(db.model_versions.c.id.desc())).mappings()
        return [_row_to_version(r, active) for r in rows]


def get_version(engine: Engine, ref: int | str) -> ModelVersion:
    """A version by id (7) or name ("v7")."""
    column = db.model_versions.c.id if isinstance(ref, int) or str(ref).isdigit() else db.model_versions.c.name
    key = int(ref) if column is db.model_versions.c.id else str(ref)
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.model_versions).where(column == key)).mappings().first()
        if row is None:
            raise RegistryError(f"no model version {ref!r}")
        return _row_to_version(row, _active_id(conn))


def version_for_job(engine: Engine, job_id: str) -> ModelVersion | None:
    """The version a job registered, if it did (the oldest, should there be several)."""
    with engine.connect() as conn:
        version_id = conn.execute(sa.select(sa.func.min(db.model_versions.c.id))
                                  .where(db.model_versions.c.job_id == job_id)).scalar()
    return get_version(engine, version_id) if version_id is not None else None


def missing_files(version: ModelVersion) -> list[str]:
    """The files a version needs to load (model.pth, model_config.json) that are not in its folder any more."""
    return [name for name in MODEL_FILES[:2] if not (version.model_dir / name).is_file()]


def active_version(engine: Engine) -> ModelVersion | None:
    with engine.connect() as conn:
        active = _active_id(conn)
    return get_version(engine, active) if active is not None else None


class ActiveVersionChanged(RegistryError):
    """Another activation came first: a decision made against the previous active version no longer holds."""


_ANY = object()


def activate(engine: Engine, ref: int | str, *, actor: str = "system", reason: str = "",
             expected_active: int | None | object = _ANY) -> ModelVersion:
    """Make a version the one that scores bins (no comparison: see modeling.promotion for that).

    expected_active: activate only if this version id (None: no version) is still the active one, checked in the
    same write transaction, so a promotion decided against it cannot overwrite a version activated meanwhile.
    """
    version = get_version(engine, ref)
    with db.write_tx(engine) as conn:
        previous = _active_id(conn)
        if expected_active is not _ANY and previous != expected_active:
            raise ActiveVersionChanged(f"the active version changed while deciding (now id {previous}, "
                                       f"expected {expected_active})")
        db.set_state(conn, ACTIVE_KEY, version.id)
        conn.execute(db.model_versions.update().where(db.model_versions.c.id == version.id)
                     .values(promoted_at=db.utcnow()))
        db.log_change(conn, actor=actor, action="activate_model", entity="model", entity_id=version.id,
                      details={"previous": previous, "reason": reason})
    return get_version(engine, version.id)

"""BinAudit's configuration: one place, read from the environment and `.streamlit/secrets.toml`.

Precedence (highest first): `BINAUDIT_<NAME>` environment variables, the `[binaudit]` table of
`.streamlit/secrets.toml`, then the defaults below. Nothing else in the project hard-codes a
bucket, region, role ARN or path; it asks `load_settings()`.

AWS credentials are not settings: boto3 finds them through its normal chain (environment,
`~/.aws`, instance role). `AWS_ENDPOINT_URL` is honoured by boto3 itself.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SECRETS = PROJECT_ROOT / ".streamlit" / "secrets.toml"
ENV_PREFIX = "BINAUDIT_"
BACKENDS = ("local", "sagemaker")


class ConfigError(ValueError):
    """A setting is missing or has a value we cannot use; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    # where the local state lives: database, imported bins, models, job logs
    workspace: Path = PROJECT_ROOT / "workspace"
    # SQLAlchemy URL; empty means a SQLite file inside the workspace
    database_url: str = ""
    # where training / tuning / deployment / batch jobs run
    backend: str = "local"

    # AWS side (only read on the SageMaker path)
    aws_region: str = ""
    sagemaker_role_arn: str = ""
    s3_bucket: str = ""
    s3_prefix: str = "binaudit"
    training_instance_type: str = "ml.g4dn.xlarge"
    training_instance_count: int = 1
    inference_instance_type: str = "ml.m5.large"
    transform_instance_type: str = "ml.m5.large"
    pytorch_version: str = "2.5"
    python_version: str = "py311"
    use_spot: bool = False
    max_runtime_seconds: int = 4 * 3600
    training_volume_gb: int = 30  # each training instance's disk (data channels, checkpoints, the model)
    max_tuning_runtime_seconds: int = 24 * 3600  # a whole tuning job's time limit
    endpoint_idle_hours: float = 24.0  # an endpoint with no invocation for this long is flagged idle

    # audit queue rules
    mismatch_threshold: float = 0.5
    daily_review_budget: int = 0  # 0: no budget, the threshold alone decides

    # uploads from the dashboard
    max_upload_mb: int = 50
    max_image_pixels: int = 40_000_000

    # reviewer sign-in: when true and OIDC is configured in secrets, the dashboard uses st.login
    require_login: bool = False

    # after a local training job registers its model: export ONNX fp32 and int8 copies and check every scoring
    # path against torch fp32 on the job's validation photos (modeling/path_check.py)
    check_scoring_paths: bool = True

    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.workspace / 'binaudit.db').as_posix()}"

    @property
    def s3_root(self) -> str:
        """`s3://bucket/prefix` for everything BinAudit writes to S3."""
        if not self.s3_bucket:
            raise ConfigError(
                "no S3 bucket configured: set BINAUDIT_S3_BUCKET or s3_bucket under [binaudit] "
                "in .streamlit/secrets.toml"
            )
        prefix = self.s3_prefix.strip("/")
        return f"s3://{self.s3_bucket}/{prefix}" if prefix else f"s3://{self.s3_bucket}"


def _coerce(name: str, raw: object, target: object) -> object:
    """Turn a string (environment) or TOML value into the type of the field's default."""
    try:
        if isinstance(target, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(text)
        if isinstance(target, int):
            return int(raw)  # type: ignore[arg-type]
        if isinstance(target, float):
            return float(raw)  # type: ignore[arg-type]
        if isinstance(target, Path):
            return Path(str(raw)).expanduser()
        return str(raw)
    except ValueError:
        raise ConfigError(f"setting {name!r} has value {raw!r}, expected {type(target).__name__}") from None


def read_secrets(path: Path = DEFAULT_SECRETS) -> dict[str, object]:
    """The `[binaudit]` table of a Streamlit secrets file, or {} when there is none."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    table = data.get("binaudit", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [binaudit] must be a table")
    return table


def load_settings(
    env: Mapping[str, str] | None = None, secrets_path: Path | None = None, **overrides: object
) -> Settings:
    """Resolve settings from environment, secrets file and explicit overrides (tests, CLI flags)."""
    env = os.environ if env is None else env
    secrets = read_secrets(secrets_path or Path(env.get(ENV_PREFIX + "SECRETS", DEFAULT_SECRETS)))
    defaults = Settings()
    values: dict[str, object] = {}
    known = {f.name for f in dataclasses.fields(Settings) if f.name != "extra"}
    unknown = sorted(set(secrets) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) in secrets [binaudit]: {', '.join(unknown)}")
    for name in known:
        target = getattr(defaults, name)
        if name in overrides and overrides[name] is not None:
            values[name] = _coerce(name, overrides[name], target)
        elif ENV_PREFIX + name.upper() in env:
            values[name] = _coerce(name, env[ENV_PREFIX + name.upper()], target)
        elif name in secrets:
            values[name] = _coerce(name, secrets[name], target)
    settings = dataclasses.replace(defaults, **values)
    if settings.backend not in BACKENDS:
        raise ConfigError(f"backend {settings.backend!r} is not one of: {', '.join(BACKENDS)}")
    if not 0.0 <= settings.mismatch_threshold <= 1.0:
        raise ConfigError(f"mismatch_threshold must lie in [0, 1], got {settings.mismatch_threshold}")
    return settings

"""What SageMaker instances cost: an on-demand price table, for the confirmation before paid work starts.

Source: the Amazon SageMaker AI pricing page (https://aws.amazon.com/sagemaker/pricing/), on-demand, US East
(N. Virginia), per instance-hour; training, real-time inference and batch transform bill the same instance type at
the same rate. Transcribed 2026-11-29 for this table; this machine cannot reach AWS, so the figures were not re-read
that day: prices differ by region and change, so the CLI and the Retrain page say "about" and name this table and
its date. Update PRICES_AS_OF with the figures. GPUS (per instance) decides whether one instance runs several
training processes (torchrun).
"""

from __future__ import annotations

PRICES_AS_OF = "2026-11-29"
PRICE_REGION = "us-east-1"

# instance type: (USD per hour on demand, GPUs)
INSTANCES: dict[str, tuple[float, int]] = {
    "ml.t2.medium": (0.056, 0),
    "ml.m5.large": (0.115, 0),
    "ml.m5.xlarge": (0.23, 0),
    "ml.m5.2xlarge": (0.461, 0),
    "ml.c5.xlarge": (0.204, 0),
    "ml.c5.2xlarge": (0.408, 0),
    "ml.g4dn.xlarge": (0.736, 1),
    "ml.g4dn.2xlarge": (0.94, 1),
    "ml.g4dn.12xlarge": (4.89, 4),
    "ml.g5.xlarge": (1.408, 1),
    "ml.g5.2xlarge": (1.515, 1),
    "ml.g5.12xlarge": (7.09, 4),
    "ml.g5.48xlarge": (20.36, 8),
    "ml.p3.2xlarge": (3.825, 1),
    "ml.p3.8xlarge": (14.688, 4),
}


def hourly_price(instance_type: str) -> float | None:
    """USD per hour on demand in PRICE_REGION, None when the table does not list the type."""
    entry = INSTANCES.get(instance_type)
    return entry[0] if entry else None


def gpu_count(instance_type: str) -> int:
    """GPUs per instance (0 for CPU instances and for types the table does not list)."""
    entry = INSTANCES.get(instance_type)
    return entry[1] if entry else 0


def describe_cost(instance_type: str, count: int = 1) -> str:
    """"2 x ml.g4dn.xlarge, about $1.47/h (on-demand us-east-1, price table of 2026-11-29)"."""
    price = hourly_price(instance_type)
    what = f"{count} x {instance_type}" if count != 1 else instance_type
    if price is None:
        return f"{what}: not in BinAudit's price table (jobs/sagemaker/prices.py); see the SageMaker pricing page"
    return f"{what}, about ${price * count:.2f}/h (on-demand {PRICE_REGION}, price table of {PRICES_AS_OF})"


def paid_work_summary(settings, kind: str, *, instance_type: str | None = None, instance_count: int | None = None,
                      max_jobs: int | None = None) -> str:
    """What a SageMaker job of `kind` will run on and about what it costs, said before it starts."""
    if kind in ("training", "tuning"):
        instance_type = instance_type or settings.training_instance_type
        count = instance_count or settings.training_instance_count
        line = f"SageMaker {kind} on {describe_cost(instance_type, count)}"
        if kind == "tuning":
            return line + f", for each of up to {max_jobs} trials (at most {settings.max_runtime_seconds / 3600:g} h " \
                          f"each, {settings.max_tuning_runtime_seconds / 3600:g} h in all)"
        spot = " (spot: typically 60-90% less)" if settings.use_spot else ""
        return line + f"{spot}, at most {settings.max_runtime_seconds / 3600:g} h"
    if kind == "deployment":
        return (f"a SageMaker endpoint on {describe_cost(settings.inference_instance_type)}; it bills every hour "
                f"until it is deleted, used or not")
    return f"a SageMaker batch transform on {describe_cost(settings.transform_instance_type)}, while it runs"

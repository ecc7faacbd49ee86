"""Training, tuning, deployment and batch-transform jobs behind one interface, local or on SageMaker.

    from jobs import TrainingParams, get_backend, list_jobs, refresh_active
    backend = get_backend(settings.backend, settings=settings, workspace=workspace, engine=engine)
    job = backend.start_training(TrainingParams(train="data/train", val="data/val", epochs=5), actor="ana")
    job = backend.refresh(job.id)              # status, per-epoch metrics; a finished run registers a version
    promote(engine, job.model_version_id, actor="ana")   # refuses a worse model unless force=True

Importing this package is cheap: no torch, no SageMaker SDK (that is imported only by the SageMaker backend).
See docs/aws.md for the commands and for running the same jobs on SageMaker.
"""

from jobs.backend import Backend, get_backend, refresh_active
from jobs.params import OBJECTIVES, STRATEGIES, TrainingParams, TuningParams, trial_value
from jobs.promotion import Comparison, PromotionResult, Scores, compare_with_active, promote
from jobs.records import (
    ACTIVE_STATUSES,
    BACKEND_NAMES,
    FINAL_STATUSES,
    KINDS,
    STATUSES,
    EndpointError,
    JobError,
    JobRecord,
)
from jobs.search_space import (
    DEFAULT_SEARCH_SPACE,
    Categorical,
    Continuous,
    Integer,
    SearchSpaceError,
)
from jobs.store import get_job, list_jobs

__all__ = [
    "ACTIVE_STATUSES", "BACKEND_NAMES", "DEFAULT_SEARCH_SPACE", "FINAL_STATUSES", "KINDS", "OBJECTIVES",
    "STATUSES", "STRATEGIES", "Backend", "Categorical", "Comparison", "Continuous", "EndpointError", "Integer",
    "JobError", "JobRecord", "PromotionResult", "Scores", "SearchSpaceError", "TrainingParams", "TuningParams",
    "compare_with_active", "get_backend", "get_job", "list_jobs", "promote", "refresh_active", "trial_value",
]

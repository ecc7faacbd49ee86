"""Jobs: training, tuning, serving and batch transform, on this machine or on SageMaker, behind one interface.

    from jobs import TrainingParams, get_backend, follow, promote
    backend = get_backend(settings.backend, settings=settings, workspace=workspace, engine=engine)
    job = backend.start_training(TrainingParams(train="data/train", val="data/val", epochs=5), actor="ana")
    job = backend.refresh(job.id)              # status, per-epoch metrics; a finished run registers a version
    promote(engine, job.model_version_id, actor="ana")   # refuses a worse model unless force=True

Where things are (docs/architecture.md has the whole map):
    backend.py       the Backend interface          backends.py   get_backend, refresh_active, follow
    local/           this machine: backend, runner (the detached process that runs a job) with training, tuner
                     and transform, endpoint (an HTTP endpoint), processes (start, check, stop)
    sagemaker/       AWS: backend, aws (boto3 plumbing), cloudwatch (logs), packaging (the source dir SageMaker
                     runs), prices (what a job will cost)
    params.py        TrainingParams (from modeling.settings), TuningParams     search_space.py
    records.py, store.py, jobdirs.py   job records, the jobs table, a local job's folder
    promotion.py     compare a candidate with the active model, promote        cli.py   python -m jobs

Importing this package is cheap: no torch, no boto3 and no SageMaker SDK (the SageMaker backend brings those).
"""

from jobs.backend import Backend
from jobs.backends import follow, get_backend, refresh_active
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
    "compare_with_active", "follow", "get_backend", "get_job", "list_jobs", "promote", "refresh_active",
    "trial_value",
]

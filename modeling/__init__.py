"""BinAudit's counting model: training, evaluation, serving and batch prediction.

Importing the package is cheap (no torch); the submodules load torch when they are imported.

Entry points:
    python -m modeling.train ...            train (the same script SageMaker runs as train.py)
    python -m modeling evaluate|predict ... evaluate a model folder, score many photos
    modeling.inference                      SageMaker serving handlers (inference.py in the container)
    modeling.predictor.Predictor            batched local scoring for the app and the jobs layer
"""

# The files inside modeling/ that train.py and inference.py import (themselves and __init__.py included).
# A packager copies exactly these into the SageMaker source dir; a test checks the list is complete and exact.
CONTAINER_MODULES: tuple[str, ...] = (
    "__init__.py",
    "train.py",
    "inference.py",
    "argtypes.py",
    "artifacts.py",
    "checkpoint.py",
    "counts.py",
    "data.py",
    "distributed.py",
    "losses.py",
    "metric_log.py",
    "metrics.py",
    "model.py",
    "preprocessing.py",
    "recounts.py",
    "serving.py",
    "settings.py",
)

"""The SageMaker backend: the same jobs on AWS (SageMakerBackend in backend.py)."""

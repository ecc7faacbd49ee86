"""The SageMaker backend: the same jobs on AWS (SageMakerBackend in backend.py; the map of its files is in
jobs/__init__.py and docs/architecture.md)."""

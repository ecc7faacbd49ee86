"""The SageMaker backend: the same jobs on AWS (SDK v3, imported on first use).

    backend.py     SageMakerBackend: training, tuning, endpoints, batch transform; refresh registers models
    aws.py         settings checks, boto3 clients with adaptive retries, S3 helpers
    packaging.py   the source dir SageMaker runs (train.py, inference.py and exactly the modules they import)
"""

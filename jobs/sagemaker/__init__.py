"""The SageMaker backend: the same jobs on AWS (SDK v3, imported on first use).

    backend.py     SageMakerBackend: training, tuning, endpoints, batch transform; refresh registers models
    aws.py         settings checks, boto3 clients with adaptive retries, S3 helpers
    cloudwatch.py  where each kind of job logs and reading it (tail, whole log, follow); endpoints' last invocation
    packaging.py   the source dir SageMaker runs (train.py, inference.py and exactly the modules they import)
    prices.py      the on-demand price table (source, date) and what a job will cost, said before it starts
"""

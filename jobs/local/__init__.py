"""The local backend: every job on this machine, no AWS account needed.

    backend.py     LocalBackend: starts jobs, refreshes them (notices a dead process), stops, resumes, deploys
    runner.py      python -m jobs.local.runner JOB_ID: the detached process that runs one job to its end
    training.py    one train.py run as the runner's child, and recording how it ended (the model version)
    tuner.py       trials of train.py over the search space, one or two at a time
    transform.py   score a folder of photos into JSON lines
    endpoint.py    python -m jobs.local.endpoint: an HTTP endpoint with SageMaker's serving handlers
    processes.py   start detached, is it alive, stop a process group; a runner's children and STOP flag
"""

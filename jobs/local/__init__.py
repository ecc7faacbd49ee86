"""The local backend: every job on this machine, no AWS account needed (LocalBackend in backend.py)."""

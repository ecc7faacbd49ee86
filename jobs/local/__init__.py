"""The local backend: every job on this machine, no AWS account needed (LocalBackend in backend.py; the map of
its files is in jobs/__init__.py and docs/architecture.md)."""

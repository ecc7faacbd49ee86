"""Shared plumbing for BinAudit: configuration and the project database."""

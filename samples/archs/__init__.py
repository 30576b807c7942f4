"""Builders for reference architectures; the registry and CLI are in samples/architectures.py."""

"""Reusable helpers for tests: real servers started on free ports in temporary directories."""

"""Choosing a worker for each generation and relaying its stream."""

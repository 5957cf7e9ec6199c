"""Shared by gateway, workers and audit store: types, tokenizer, telemetry, egress, event loop."""

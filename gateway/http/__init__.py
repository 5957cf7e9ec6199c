"""The OpenAI-compatible HTTP door: the same pipeline as gRPC, behind OpenAI's HTTP API."""

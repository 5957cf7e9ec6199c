"""Process plumbing: server start and shutdown, several processes, metrics, logging, dev stack."""

"""Caller identity: JWT verification, key sources and the verified principal."""

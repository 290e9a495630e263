"""Verifiable decision reports and the hash-chained audit log."""

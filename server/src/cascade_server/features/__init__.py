"""Signals computed from engagement data, shared by serving and offline jobs."""

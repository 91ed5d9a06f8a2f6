"""Helpers shared by the tests (data builders, server harness)."""

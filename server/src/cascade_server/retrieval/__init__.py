"""Retrieval: candidate sources and the stage that merges them."""

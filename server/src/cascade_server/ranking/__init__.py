"""Ranking: scorers and the stage that sorts candidates."""

"""Batch jobs: data import, demo data, training, index builds, evaluation."""

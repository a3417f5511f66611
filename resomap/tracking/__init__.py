"""Experiment tracking: MLflow mirrors each run record; secrets are redacted in one place."""

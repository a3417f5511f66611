"""Turning the per-run result files of a sweep into tables, statistics and a report."""

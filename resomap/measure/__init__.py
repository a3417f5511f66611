"""Measurements taken inside a run: cost (FLOPs, parameters, memory) and attribution methods."""

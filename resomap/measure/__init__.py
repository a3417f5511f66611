"""Measurements taken inside a run: latency (timed passes), memory, cost (FLOPs, parameters),
the machine's peak, which seeds pay for them, and attribution methods."""

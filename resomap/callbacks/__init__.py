"""Lightning callbacks that measure a run and write its result."""

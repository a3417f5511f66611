"""After a sweep: read the run records, compare resolutions, write tables, plots and the report."""

"""One run of the study: identity, record, build, lock, and the road from config to record."""

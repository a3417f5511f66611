"""The sections of ``resomap bench``: each measures one thing and returns its part of bench.json."""

"""ResoMap's Hydra configs, shipped as the package ``resomap.conf`` (read as ``pkg://resomap.conf``).

This file makes conf/ a package: Hydra's package config source needs an ``__init__.py``.
"""

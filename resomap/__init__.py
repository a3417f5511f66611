"""ResoMap: how input resolution changes what a CNN learns and what it costs."""

from resomap.config import register_resolvers

register_resolvers()

__version__ = "0.1.0"

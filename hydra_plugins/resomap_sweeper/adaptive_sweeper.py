"""``hydra/sweeper=adaptive`` (conf/hydra/sweeper/adaptive.yaml): the adaptive study's sweeper.

Hydra instantiates sweepers only from modules of the ``hydra_plugins`` package, and imports every
one of them at start-up: this module only names :class:`resomap.adaptive_sweep.AdaptiveSweeper`
there, and that module loads nothing of the training stack until a sweep runs.
"""

from resomap.adaptive_sweep import AdaptiveSweeper as _AdaptiveSweeper


class AdaptiveSweeper(_AdaptiveSweeper):
    """The grid once, then more seeds only where a comparison is still undecided."""

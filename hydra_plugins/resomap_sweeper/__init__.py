"""ResoMap's Hydra sweepers (Hydra loads plugins only from the ``hydra_plugins`` package)."""


def register() -> None:
    """Tell Hydra about the adaptive sweeper, whatever the install.

    Hydra finds plugins by listing the folders of the ``hydra_plugins`` namespace; an editable
    install (``pip install -e .``) maps this project's part of it through an import hook that
    such a listing does not see, so ``hydra/sweeper=adaptive`` would be an unknown plugin there.
    Hydra's ``Plugins.register`` adds the class by hand. The scan must come first: it executes
    Hydra's core plugin modules again, which replaces the ``BasicSweeper`` class, and a subclass
    of the class it replaced could not be instantiated.
    """
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()
    from hydra_plugins.resomap_sweeper.adaptive_sweeper import AdaptiveSweeper

    plugins.register(AdaptiveSweeper)

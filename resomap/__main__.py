"""``python -m resomap <command> ...``: the ``resomap`` command without its console script."""

from resomap.cli import main

if __name__ == "__main__":
    main()

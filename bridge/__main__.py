"""``python -m bridge``, the same as the ``bridge`` console script."""

from bridge.cli.app import main

main()

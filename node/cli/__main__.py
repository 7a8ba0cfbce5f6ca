"""``python -m node.cli``: the ``credit-node`` command without the installed script."""

from creditexchange.node.cli import main

main()

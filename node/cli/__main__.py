"""``python -m node.cli``: the ``credit-node`` command without the installed script."""

from node.cli import main

main()

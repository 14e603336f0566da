"""``python -m node_registry`` is the ``node-registry`` command."""

from node_registry.cli.main import main

main()

"""The ``node-registry`` command."""

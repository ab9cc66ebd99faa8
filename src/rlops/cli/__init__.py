"""The ``rlops`` command line (thin wrappers over the library)."""

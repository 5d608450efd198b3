"""The package's version, in a module of its own: the bootstrap call sends it, and the package exports it."""

__version__ = "0.1.0"

"""ndup: find and safely clean up duplicate photos."""

__version__ = "0.1.0"

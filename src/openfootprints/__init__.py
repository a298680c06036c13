"""openfootprints: building footprints from high-resolution imagery."""

__version__ = "0.1.0"

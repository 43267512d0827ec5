"""The package version, apart from the package root so that low-level modules can read it."""

__version__ = "0.1.0"

"""ragbot: grounded chat backend with learned sparse + dense hybrid retrieval."""

__version__ = "0.1.0"

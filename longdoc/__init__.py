"""longdoc: offline reading of long documents and code with a Longformer-style encoder."""

__version__ = "0.1.0"

"""tegaki (手書き): a workbench for handwritten-digit recognition."""

__version__ = "0.1.0"

from tegaki.errors import TegakiError  # noqa: E402

__all__ = ["TegakiError", "__version__"]

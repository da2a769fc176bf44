"""Drop-in replacements for other code bases' layer functions (see `fastconv.compat.cs231n`)."""
from . import cs231n

__all__ = ["cs231n"]

"""User-facing error type shared by every styleforge tool.

A :class:`StyleforgeError` carries one readable line that names the offending file or flag and says how to
fix it. The CLIs print that line and exit non-zero, without a traceback; library callers can catch it.
"""

from __future__ import annotations


class StyleforgeError(Exception):
    """A problem with the user's input or environment (not a bug in styleforge)."""

    exit_code = 1


class NetworkFormatError(StyleforgeError):
    """A network file is missing, truncated, corrupt or not a network at all."""


class MissingNetworkError(NetworkFormatError):
    """A readable network file that does not hold the network asked for (e.g. no discriminator)."""


class UnsafePickleError(NetworkFormatError):
    """A pickle asked for a global outside the allow-list; nothing from it was executed."""

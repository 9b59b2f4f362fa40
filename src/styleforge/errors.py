"""User-facing error type shared by every styleforge tool.

A :class:`StyleforgeError` carries one readable line that names the offending file or value and says how to
fix it. When the problem is one setting, the error also knows which: ``param`` is the library argument
(``class_idx``, ``seeds``...), ``value`` what was given, ``label`` its name in words (``class``). The message
then reads ``class 12: out of range ...`` in Python; a front end names its own control instead through
:meth:`StyleforgeError.render` (the command-line tools print ``--class 12: out of range ...``, a web page can
mark its field). The CLIs print the line and exit non-zero, without a traceback; library callers catch it.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

_NO_VALUE = object()


class _AboutSetting:
    """A message that may be about settings: ``param`` (the library argument it is about), its ``value`` and
    ``label`` (its name in words); ``also``: other settings the message names, ``{param: label}``."""

    def _init(self, message: str, param: Optional[str], value: Any, label: Optional[str],
              also: Optional[Mapping[str, str]]) -> str:
        self.param, self.value, self.detail = param, value, message
        self.labels: Dict[str, str] = {param: label or param.replace("_", " ")} if param else {}
        self.labels.update(also or {})
        return self.render({})

    def render(self, names: Mapping[str, str]) -> str:
        """The message with each setting called as the front end calls it (``names``: param -> a flag, a field
        name; the others by their labels). ``{<param>}`` in the message is replaced by that name, ``{name}`` by
        the name of ``param``; a message about ``param`` that does not name it is prefixed with the name and
        the value: ``--class 12: out of range``."""
        def called(p: str) -> str:
            return names.get(p) or self.labels[p]

        text = self.detail
        for p in self.labels:
            text = text.replace("{" + p + "}", called(p))
        if self.param is None:
            return text
        if "{name}" in text:
            return text.replace("{name}", called(self.param))
        subject = called(self.param) if self.value is _NO_VALUE else f"{called(self.param)} {self.value}"
        return f"{subject}: {text}" if text else subject


class StyleforgeError(_AboutSetting, Exception):
    """A problem with the user's input or environment (not a bug in styleforge)."""

    exit_code = 1

    def __init__(self, message: str = "", *, param: Optional[str] = None, value: Any = _NO_VALUE,
                 label: Optional[str] = None, also: Optional[Mapping[str, str]] = None):
        super().__init__(self._init(message, param, value, label, also))


class StyleforgeWarning(_AboutSetting, UserWarning):
    """A warning about the user's input (a setting that has no effect, a fallback taken); like
    :class:`StyleforgeError` it can name the settings it is about."""

    def __init__(self, message: str = "", *, param: Optional[str] = None, value: Any = _NO_VALUE,
                 label: Optional[str] = None, also: Optional[Mapping[str, str]] = None):
        super().__init__(self._init(message, param, value, label, also))


class NetworkFormatError(StyleforgeError):
    """A network file is missing, truncated, corrupt or not a network at all."""


class MissingNetworkError(NetworkFormatError):
    """A readable network file that does not hold the network asked for (e.g. no discriminator)."""


class UnsafePickleError(NetworkFormatError):
    """A pickle asked for a global outside the allow-list; nothing from it was executed."""

"""How long-running library functions report to their caller: one callback, any front end.

A function that takes a while accepts ``callback: Optional[Callback] = None`` and reports :class:`Event`\\ s
through a :class:`Reporter`; it never prints. The command-line tools pass
:func:`styleforge.commands.progress.cli_callback` (tqdm bars, one-line notes on stderr), the web UI its own
function, a script whatever it likes; None is silent.

Events:

- ``begin``: a stage starts (``stage``, ``total`` items or None, ``unit``; ``transient``: a stage among many,
  e.g. one target of a batch, that a front end may clear once it ends);
- ``advance``: ``n`` more items of the stage are done (``info``: numbers worth showing, e.g. the current loss);
- ``end``: the stage is over;
- ``note``: something the user should read (a fallback taken, an item skipped or failed; ``level`` is ``info``,
  ``warning`` or ``failed``); ``message`` is text, a :class:`~styleforge.errors.StyleforgeWarning` or (for an
  item that failed) a :class:`~styleforge.errors.StyleforgeError`; those two name the settings they are about, so
  a front end can call them by its own names (the CLIs by their flags).

    rep = Reporter(callback)
    with rep.stage("generate", total=len(seeds), unit="img") as advance:
        for batch in batches:
            ...
            advance(len(batch), loss=0.1)
    rep.note(StyleforgeWarning("{name} is ignored", param="class_idx"), level="warning")
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, Optional, Union

from ..errors import StyleforgeError, StyleforgeWarning

Message = Union[str, StyleforgeWarning, StyleforgeError]


@dataclass
class Event:
    kind: str  # begin | advance | end | note
    stage: str = ""
    total: Optional[int] = None
    unit: str = "it"
    n: int = 0
    info: Dict[str, Any] = field(default_factory=dict)
    message: Optional[Message] = None
    level: str = "info"  # for notes: info | warning | failed
    transient: bool = False  # for begin: clear the stage's display when it ends


Callback = Callable[[Event], None]


class Reporter:
    """Sends :class:`Event` s to ``callback`` (does nothing without one). A Reporter is itself a callback, so a
    function hands its own on to the functions it calls."""

    def __init__(self, callback: Optional[Callback] = None):
        self.callback = callback

    def emit(self, event: Event) -> None:
        if self.callback is not None:
            self.callback(event)

    __call__ = emit

    @contextlib.contextmanager
    def stage(self, name: str, total: Optional[int] = None, unit: str = "it",
              transient: bool = False) -> Iterator[Callable[..., None]]:
        """A stage of ``total`` items: yields ``advance(n=1, **info)``; ``end`` is sent however the block ends."""
        self.emit(Event("begin", name, total=total, unit=unit, transient=transient))

        def advance(n: int = 1, **info: Any) -> None:
            self.emit(Event("advance", name, n=n, info=info))

        try:
            yield advance
        finally:
            self.emit(Event("end", name))

    def note(self, message: Message, level: str = "info") -> None:
        self.emit(Event("note", message=message, level=level))


def reporter(callback: Union[Reporter, Callback, None]) -> Reporter:
    """A :class:`Reporter` for ``callback`` (one is passed through)."""
    return callback if isinstance(callback, Reporter) else Reporter(callback)

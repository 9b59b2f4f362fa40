"""The web UI and JSON API: one FastAPI server for the page and the API, over the library.

- :mod:`.engine`: what is computed (networks loaded once, latents, edits, renders, a result cache, one forward pass at
  a time, cancellable projection jobs); no web framework;
- :mod:`.app`: :func:`create_app`, the FastAPI application (the page at ``/``, the API under ``/api``, OpenAPI at
  ``/docs`` and ``/openapi.json``); needs the ``ui`` extra (fastapi, uvicorn, python-multipart).

    from styleforge.ui import Engine, Limits
    from styleforge.ui.app import create_app
    app = create_app(Engine("faces32", device="cpu"))     # serve with uvicorn.run(app, host="127.0.0.1")
"""

from .engine import Engine, Limits

__all__ = ["Engine", "Limits"]

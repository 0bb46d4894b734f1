"""``uvicorn adapter.app:app``: the service as an ASGI app (kept at this path for deployments).

The app itself lives in :mod:`adapter.web.app`.
"""

from adapter.web.app import app, create_app

__all__ = ["app", "create_app"]

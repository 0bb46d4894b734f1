"""``uvicorn adapter.app:app``: the service as an ASGI app (kept at this path for deployments).

Importing this module reads and checks every setting, core and channel
(:func:`adapter.ops.startup.exit_on_bad_settings`): a malformed one ends the process with
one line naming it, before uvicorn runs the lifespan or binds a port. The app itself lives
in :mod:`adapter.web.app`; tests build it with ``create_app(settings)``.
"""

from adapter.ops.startup import exit_on_bad_settings
from adapter.web.app import ServiceApp, create_app

__all__ = ["app", "create_app"]

app = ServiceApp(exit_on_bad_settings())

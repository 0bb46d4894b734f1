"""Input channels: one module per way a contact reaches the service.

Each module defines ``channel`` (see :mod:`adapter.channels.base`) and reaches the core
only through :mod:`adapter.channels`: it verifies the request exactly as its source signs
it, maps the payload to contact fields, names the source's event id, and hands a
:class:`~adapter.channels.Submission` to the core. Validation, storage and delivery are
the core's.
"""

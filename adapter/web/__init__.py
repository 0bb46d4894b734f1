"""The web edge: the Starlette app factory, the admin page and the operators' JSON API."""

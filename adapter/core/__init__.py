"""The pure core: contacts, validation, extraction, payload reading, delivery records and decisions.

Nothing here does I/O or imports a database, HTTP or metrics library; time and randomness are passed in."""

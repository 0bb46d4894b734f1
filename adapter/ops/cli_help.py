"""Help text for the ``contact-adapter`` command that reads like a CLI's.

Typer shows ``<bool>`` and ``{text}`` placeholders; :class:`PlainCommand` and
:class:`PlainGroup` show nothing for a flag and an upper-case word (``TEXT``,
``INTEGER``, ``FILE``) for a value, and usage lines as ``parse [OPTIONS] TEXT``.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand, TyperGroup

__all__ = ["PlainCommand", "PlainGroup"]

_WORDS = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "Path": "FILE", "path": "FILE"}


def _plain_metavar(param: Any) -> None:
    """What a CLI's help shows for a parameter: nothing for a flag, else an upper-case word
    (``TEXT``, ``INTEGER``, ``FILE``), not typer's ``<bool>``/``{text}`` placeholders."""
    if getattr(param, "metavar", None) is not None:
        return
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        param.metavar = ""
    elif getattr(param, "param_type_name", "") == "argument":
        param.metavar = str(param.name or "value").upper()
        param.display_type_rich = lambda ctx: None  # its name says it: no "<str>" beside
    else:
        bare = param.bare_type() if hasattr(param, "bare_type") else "str"
        param.metavar = _WORDS.get(bare.removeprefix("list[").removesuffix("]"), "VALUE")


class _PlainHelp:
    """Help and usage lines as a CLI writes them (``parse [OPTIONS] TEXT``)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            _plain_metavar(param)
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = ["[OPTIONS]"]
        for param in self.get_params(ctx):
            if getattr(param, "param_type_name", "") == "argument":
                name = param.metavar or str(param.name or "").upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces


class PlainCommand(_PlainHelp, TyperCommand):
    """A command whose help reads like a CLI's."""


class PlainGroup(_PlainHelp, TyperGroup):
    """A group whose help reads like a CLI's."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return ["[OPTIONS]", "COMMAND", "[ARGS]..."]

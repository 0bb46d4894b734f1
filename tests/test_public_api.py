"""The public API: a sorted ``__all__`` whose names all exist."""

from __future__ import annotations

import adapter


def test_all_is_sorted_and_complete() -> None:
    assert adapter.__all__ == sorted(adapter.__all__)
    for name in adapter.__all__:
        assert hasattr(adapter, name), name


def test_every_module_says_what_it_is_for() -> None:
    import importlib
    import pkgutil

    import handlers

    for package in (adapter, handlers):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            assert module.__doc__ and module.__doc__.strip(), module.__name__

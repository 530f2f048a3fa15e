"""The facade's `__all__` is exactly its public surface (as httpx tests its own)."""

from __future__ import annotations

import types
from pathlib import Path

import hybridcache.client
from hybridcache.client import errors


def test_all_is_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(hybridcache.client).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert sorted(hybridcache.client.__all__) == sorted(public)
    assert len(set(hybridcache.client.__all__)) == len(hybridcache.client.__all__)


def test_only_errors_reasons_and_backoff_are_public_submodules() -> None:
    # backoff: the one retry policy, also used by the service (another distribution).
    modules = {
        name
        for name, value in vars(hybridcache.client).items()
        if isinstance(value, types.ModuleType) and not name.startswith("_")
    }
    assert modules == {"backoff", "errors", "reasons"}


def test_errors_module_all_is_reexported() -> None:
    assert set(errors.__all__) <= set(hybridcache.client.__all__)
    for name in errors.__all__:
        assert getattr(hybridcache.client, name) is getattr(errors, name)


def test_exception_tree() -> None:
    for name in errors.__all__:
        value = getattr(errors, name)
        if isinstance(value, type) and value is not errors.HybridCacheError:
            assert issubclass(value, errors.HybridCacheError), name
            assert name in (errors.__doc__ or ""), f"{name} missing from the drawn tree"


def test_py_typed_marker_ships() -> None:
    assert (Path(hybridcache.client.__file__).parent / "py.typed").is_file()


def test_no_init_in_the_namespace_package() -> None:
    # `hybridcache` is shared by the client and server distributions (PEP 420).
    assert not (Path(hybridcache.client.__file__).parents[1] / "__init__.py").exists()

"""The backend registry: a unit's declared backend name resolves here to the class that answers for it.

Built-in backends register when `edgec.backends` is imported; a new target is
one module that defines a :class:`edgec.backends.base.Backend` subclass and
calls :func:`register` — nothing outside it changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from edgec.errors import EdgecError

if TYPE_CHECKING:
    from edgec.backends.base import Backend
    from edgec.cluster import ComputeUnit, Device

_BACKENDS: dict[str, type["Backend"]] = {}
B = TypeVar("B", bound="type[Backend]")


def register(cls: B) -> B:
    """Make `cls` the backend named `cls.name` (a class decorator)."""
    existing = _BACKENDS.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"backend '{cls.name}' is registered twice ({existing.__module__}, {cls.__module__})")
    _BACKENDS[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    _BACKENDS.pop(name, None)


def names() -> list[str]:
    return sorted(_BACKENDS)


def backend_class(name: str) -> type["Backend"]:
    """The registered backend `name`; EdgecError listing the known ones otherwise."""
    try:
        return _BACKENDS[name]
    except KeyError:
        raise EdgecError(f"unknown backend '{name}'; known backends: {', '.join(names())}") from None


def backend_for(device: "Device", unit: "ComputeUnit | str") -> "Backend":
    """The backend object of one compute unit of `device` (the unit's `backend` names it)."""
    if isinstance(unit, str):
        unit = device.units[unit]
    return backend_class(unit.backend)(device, unit)

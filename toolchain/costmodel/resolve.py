"""Which profile predicts a compute unit: measured on the board, built in, or rough from the catalog."""

from __future__ import annotations

from edgec.cluster import ComputeUnit, Device
from edgec.costmodel.builtin import BUILTIN_PROFILES, catalog_profile
from edgec.costmodel.profile import UnitProfile, load_profile
from edgec.errors import EdgecError


def resolve_unit_profile(device: Device, unit: ComputeUnit) -> UnitProfile:
    """The profile that predicts `unit` of `device`.

    In order: the unit's entry in the device's measured profile file, the built-in
    profile the unit names, then a rough profile from the catalog's sustained
    ``gflops`` (flagged in ``sources``).
    """
    if device.profile_path:
        pf = load_profile(device.profile_path)
        if unit.name in pf.units:
            return pf.units[unit.name]
    if unit.profile:
        if unit.profile not in BUILTIN_PROFILES:
            known = ", ".join(sorted(BUILTIN_PROFILES))
            raise EdgecError(f"unit '{device.name}.{unit.name}' names profile '{unit.profile}', which is not "
                             f"built in; expected one of: {known}, or give the device a measured profile file")
        return BUILTIN_PROFILES[unit.profile]
    return catalog_profile(unit)

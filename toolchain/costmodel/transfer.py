"""What moving a tensor between two devices costs: link time plus serialization at both ends.

Every transfer cost in edgec comes from here: the partition problem's link
matrices, the board prediction and the manifest's transfers.
"""

from __future__ import annotations

from edgec.cluster import Cluster
from edgec.costmodel.profile import UnitProfile
from edgec.costmodel.resolve import resolve_unit_profile
from edgec.errors import EdgecError


def transfer_ms(cluster: Cluster | None, nbytes: int, src: str, dst: str) -> float:
    """ms to move a tensor of nbytes from device src to device dst (see :func:`transfer_rate`)."""
    if src == dst or nbytes <= 0:
        return 0.0
    bytes_per_s, latency_ms = transfer_rate(cluster, src, dst)
    return float("inf") if bytes_per_s <= 0 else latency_ms + nbytes * 1e3 / bytes_per_s


def transfer_rate(cluster: Cluster | None, src: str, dst: str) -> tuple[float, float]:
    """(bytes per second, latency ms) of a transfer from src to dst; (0, 0) without a link.

    The link's latency and bandwidth, with one copy at each end to serialize and
    deserialize the message at each device's CPU memory bandwidth: per byte,
    1/link + 1/copy(src) + 1/copy(dst). The partition problem's link matrices
    are these, so partition, manifest and prediction charge a transfer alike.
    """
    if cluster is None:
        raise EdgecError("no cluster to cost transfers against; pass a cluster file with -t cluster.json")
    link = cluster.link(src, dst) if src != dst else None
    if link is None:
        return (0.0, 0.0)
    seconds_per_byte = 8 / (link.bandwidth_mbps * 1e6) + sum(
        1 / (_copy_profile(cluster, name).bandwidth_gbs * 1e9) for name in (src, dst))
    return (1 / seconds_per_byte, link.latency_ms)


def _copy_profile(cluster: Cluster, device_name: str) -> UnitProfile:
    """The profile whose memory bandwidth serializes a device's messages: its first CPU unit's."""
    device = cluster.devices[device_name]
    units = sorted(device.units.values(), key=lambda u: u.kind != "cpu")
    return resolve_unit_profile(device, units[0])

"""cluster.json: catalog, overrides, links, validation errors naming the JSON path."""

from __future__ import annotations

import json

import jsonschema
import pytest

from edgec.cluster import load_cluster, parse_cluster, schema
from edgec.errors import EdgecError

from conftest import REPO, TRIO, TRIO_WIFI


def base(**extra):
    spec = {"devices": [{"name": "xu4", "type": "odroid-xu4"}, {"name": "pi", "type": "raspberry-pi-4"}],
            "network": {"bandwidth_mbps": 1000, "latency_ms": 0.2}, "source": "pi", "sink": "pi"}
    spec.update(extra)
    return spec


def test_samples_validate_against_the_published_schema():
    for path in (REPO / "samples" / "clusters").glob("*.json"):
        jsonschema.validate(json.loads(path.read_text()), schema())
        load_cluster(path)


def test_reference_trio_units_come_from_the_catalog():
    trio = load_cluster(TRIO)
    assert set(trio.devices) == {"xu4", "rpi4", "nano"}
    assert set(trio.devices["xu4"].units) == {"big", "little"}
    assert trio.devices["xu4"].units["big"].cores == (4, 5, 6, 7)
    assert set(trio.devices["nano"].units) == {"cpu", "gpu"}
    assert trio.devices["nano"].units["gpu"].backend == "tensorrt"
    wifi = load_cluster(TRIO_WIFI)
    assert wifi.link_ms(10**6, "xu4", "nano") > 10 * trio.link_ms(10**6, "xu4", "nano")


def test_fields_override_the_catalog_one_by_one():
    spec = base()
    spec["devices"][1].update(memory_mb=8192, units={"cpu": {"gflops": 30.0}})
    spec["devices"][0]["units"] = {"little": None}
    cluster = parse_cluster(spec)
    pi = cluster.devices["pi"]
    assert pi.units["cpu"].gflops == 30.0 and pi.units["cpu"].cores == (0, 1, 2, 3)
    assert pi.memory_bytes == (8192 - 768) * 2**20
    assert set(cluster.devices["xu4"].units) == {"big"}


def test_explicit_link_overrides_network_and_transfer_time():
    spec = base(links=[{"between": ["xu4", "pi"], "bandwidth_mbps": 8, "latency_ms": 1.0}])
    cluster = parse_cluster(spec)
    assert cluster.link_ms(10**6, "pi", "xu4") == pytest.approx(1.0 + 1000.0)
    assert cluster.link_ms(10**6, "pi", "pi") == 0.0


def test_missing_link_is_infinite():
    spec = base()
    del spec["network"]
    assert parse_cluster(spec).link_ms(1, "pi", "xu4") == float("inf")


@pytest.mark.parametrize("mutate, needle", [
    (lambda s: s["devices"].append({"name": "xu4", "type": "odroid-xu4"}), "defined twice"),
    (lambda s: s.update(devices=[]), "$.devices"),
    (lambda s: s["devices"][0].update(memory_mb=0), "$.devices[0].memory_mb"),
    (lambda s: s["devices"][0].update(units={"npu": {"kind": "cpu"}}), "$.devices[0].units.npu"),
    (lambda s: s["devices"][0].update(colour="red"), "colour"),
    (lambda s: s.update(sink="cloud"), "$.sink"),
    (lambda s: s.update(links=[{"between": ["pi", "pi"], "bandwidth_mbps": 1}]), "$.links[0].between"),
    (lambda s: s["devices"][1].update(units={"cpu": {"backend": "tensorrt"}}),
     "$.devices[1].units.cpu.backend: the 'tensorrt' backend runs gpu units, not a cpu unit; a cpu unit runs 'neon'"),
    (lambda s: s["devices"][1].update(units={"cpu": {"backend": "vulkan"}}),
     "$.devices[1].units.cpu.backend: unknown backend 'vulkan'; known backends: neon, tensorrt"),
    (lambda s: s["devices"][1].update(units={"npu": {"kind": "gpu", "cores": [0], "gflops": 1, "backend": "neon"}}),
     "$.devices[1].units.npu.backend"),
    (lambda s: s["devices"][1].update(onnxruntime="1.10beta"), "$.devices[1].onnxruntime"),
    (lambda s: s["devices"][1].update(onnxruntime="1.2"), "$.devices[1].onnxruntime: onnxruntime 1.2 is older"),
    (lambda s: s["devices"][1].update(units={"cpu": {"cores": [0, 0, 1]}}), "core 0 is listed twice"),
    (lambda s: s["devices"][1].update(units={"cpu": {"cores": [99]}}), "has cores 0-3, not 99"),
    (lambda s: s["devices"][0].update(units={"big": {"cores": [0, 1, 2, 3]}}), "core 0 belongs to unit"),
    (lambda s: s["devices"][0].update(units={"litle": None}), "$.devices[0].units.litle: 'odroid-xu4' has no unit"),
])
def test_validation_names_the_json_path(mutate, needle):
    spec = base()
    mutate(spec)
    with pytest.raises(EdgecError) as exc:
        parse_cluster(spec, "c.json")
    assert needle in str(exc.value) and str(exc.value).startswith("c.json: ")


def test_unreadable_cluster_file(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text("{ devices: ")
    with pytest.raises(EdgecError, match="not valid JSON"):
        load_cluster(bad)

"""The one manifest model: round trip, each stage's cores, and one-line errors for a bad manifest.json."""

from __future__ import annotations

import copy
import json

import pytest

from edgec.cluster import load_cluster
from edgec.errors import EdgecError
from edgec.jsonfile import json_path, read_json
from edgec.manifest import SCHEMA_VERSION, Manifest, read_manifest
from edgec.manifest_schema import check_against_schema, schema_errors

from conftest import MULTI, save_text_model
from test_runtime_local import compile_for_hosts


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """A two-device plan of the MULTI model (three stages: d0, d1, d0) and its manifest.json decoded."""
    tmp = tmp_path_factory.mktemp("manifest")
    model = save_text_model(MULTI, tmp / "multi.onnx")
    out = compile_for_hosts(model, tmp, [1, 0, 1])
    return out, json.loads((out / "manifest.json").read_text())


def test_a_compiled_manifest_reads_back_equal_and_conforms_to_the_schema(compiled):
    out, data = compiled
    m = read_manifest(out)
    assert m.schema_version == SCHEMA_VERSION == data["schema_version"]
    assert Manifest.from_json(m.to_json()) == m
    assert m.to_json() == data
    assert schema_errors(data) == []
    check_against_schema(m)


def test_each_stage_carries_its_units_cores(compiled):
    out, data = compiled
    cluster = load_cluster(out.parent / "out.json")
    for stage in read_manifest(out).stages:
        assert stage.cores == list(cluster.devices[stage.device].units[stage.unit].cores)
    assert [s["cores"] for s in data["stages"]] == [[1], [0], [1]]


def _set(path, value):
    def edit(data):
        *head, last = path
        target = data
        for p in head:
            target = target[p]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return edit


_DELETE = object()

# (edit, JSON path and message the error names, whether the JSON Schema catches it too)
BAD = {
    "shape not a list": (_set(["stages", 1, "inputs", 0, "shape"], "1x8"),
                         "$.stages[1].inputs[0].shape: expected a list of ints", True),
    "shape of strings": (_set(["stages", 1, "inputs", 0, "shape"], [1, "8"]),
                         "$.stages[1].inputs[0].shape: expected a list of ints", True),
    "negative dim": (_set(["outputs", 0, "shape"], [1, -8]), "$.outputs[0].shape[1]: must be at least 0", True),
    "missing device": (_set(["stages", 2, "device"], _DELETE), "$.stages[2]: missing field 'device'", True),
    "unknown stage field": (_set(["stages", 0, "threads"], 4), "$.stages[0].threads: unknown field", True),
    "bad sha256": (_set(["stages", 0, "sha256"], "abc"), "$.stages[0].sha256: expected a sha256", True),
    "cores of strings": (_set(["stages", 0, "cores"], ["0"]), "$.stages[0].cores: expected a list of ints", True),
    "objective": (_set(["objective"], "fast"), "$.objective: expected one of throughput, latency", True),
    "bytes not an int": (_set(["transfers", 0, "bytes"], 1.5), "$.transfers[0].bytes: expected an integer", True),
    "predicted ms": (_set(["stages", 0, "predicted_ms"], -1), "$.stages[0].predicted_ms: must be at least 0", True),
    "latency a string": (_set(["predicted", "latency_ms"], "1"), "$.predicted.latency_ms: expected a number", True),
    "inputs an object": (_set(["inputs"], {}), "$.inputs: expected a list of tensors", True),
    "session a list": (_set(["stages", 0, "session"], []), "$.stages[0].session: expected an object", True),
    "no stages": (_set(["stages"], []), "$.stages: expected at least one stage", True),
    "missing transfers": (_set(["transfers"], _DELETE), "$: missing field 'transfers'", True),
    "stray boundary tensor": (_set(["stages", 1, "receives", 0], "nowhere"),
                              "$.stages[1].receives[0]: tensor 'nowhere' crosses a boundary", False),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_malformed_field_is_one_line_naming_the_file_and_json_path(compiled, tmp_path, case):
    edit, expected, schema_too = BAD[case]
    data = copy.deepcopy(compiled[1])
    edit(data)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(EdgecError) as info:
        read_manifest(tmp_path)
    text = str(info.value)
    assert text.startswith(f"{tmp_path / 'manifest.json'}: {expected}"), text
    assert "\n" not in text
    assert bool(schema_errors(data)) == schema_too  # the published schema and the hand check agree


def test_not_an_object_missing_or_not_json(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text("[1, 2]")
    with pytest.raises(EdgecError, match=r"manifest.json: \$: expected an object, got \[1, 2\]"):
        read_manifest(tmp_path)
    path.write_text('{"schema_version": 1,\n  "stages": [}')
    with pytest.raises(EdgecError, match=r"manifest.json: not valid JSON \(line 2, column 14\)"):
        read_manifest(tmp_path)
    path.unlink()
    with pytest.raises(EdgecError, match=r"manifest.json: no manifest.json here; pass the folder `edgec compile -o`"):
        read_manifest(tmp_path)
    with pytest.raises(EdgecError, match=r"nowhere: no such folder; pass the folder `edgec compile -o` wrote"):
        read_manifest(tmp_path / "nowhere")


@pytest.mark.parametrize("version, message", [
    (2, r"\$.schema_version: 2, but this edgec reads version 1; recompile with this edgec"),
    ("1", r"\$.schema_version: expected an integer, got \"1\""),
    (None, r"\$.schema_version: expected an integer, got null"),
])
def test_another_schema_version_is_refused_before_anything_else(compiled, tmp_path, version, message):
    data = dict(compiled[1], schema_version=version, stages="whatever")
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(EdgecError, match=message):
        read_manifest(tmp_path)


def test_a_manifest_from_before_stages_had_cores_still_reads(compiled, tmp_path):
    data = copy.deepcopy(compiled[1])
    for stage in data["stages"]:
        del stage["cores"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    assert all(s.cores == [] for s in read_manifest(tmp_path).stages)
    assert schema_errors(data) == []


def test_the_json_reader_names_the_file(tmp_path):
    with pytest.raises(EdgecError, match=r"x.json: pass the cluster with -t"):
        read_json(tmp_path / "x.json", missing="pass the cluster with -t")
    with pytest.raises(EdgecError, match="is a folder, not a JSON file"):
        read_json(tmp_path)
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(EdgecError, match=r"bin.json: not UTF-8 text \(byte 0"):
        read_json(tmp_path / "bin.json")
    (tmp_path / "bad.json").write_text('{"a": 1,}')
    with pytest.raises(EdgecError, match=r"bad.json: not valid JSON \(line 1, column 9\)"):
        read_json(str(tmp_path / "bad.json"))
    (tmp_path / "ok.json").write_text('{"a": [1]}')
    assert read_json(tmp_path / "ok.json") == {"a": [1]}
    assert json_path(["stages", 2, "inputs", 0, "shape"]) == "$.stages[2].inputs[0].shape"
    assert json_path([]) == "$"

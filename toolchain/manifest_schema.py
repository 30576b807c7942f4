"""manifest.json's published JSON Schema, and checking a manifest against it (compiler side).

`edgec schema manifest` prints the schema; a compile checks the manifest it is
about to write against it (a failure is a bug: edgec wrote something
off-schema). This needs jsonschema, so it lives apart from edgec.manifest,
whose own structural check is what the board runtime runs.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema

from edgec.jsonfile import json_path
from edgec.manifest import Manifest


def schema() -> dict[str, Any]:
    """The published JSON Schema of manifest.json."""
    return json.loads(resources.files("edgec").joinpath("schemas/manifest.schema.json").read_text())


def schema_errors(data: Any) -> list[str]:
    """What in decoded manifest JSON breaks the schema, as `$.json.path: message` lines (none: it conforms)."""
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{json_path(list(e.absolute_path))}: {e.message}" for e in errors]


def check_against_schema(manifest: Manifest) -> None:
    """Assert that the manifest the compiler is about to write conforms to the published schema."""
    errors = schema_errors(manifest.to_json())
    if errors:  # a bug, not a user error: keep the traceback
        raise AssertionError(f"edgec wrote a manifest off its schema: {errors[0]}")

"""Reading a JSON file a user gave us: the one reader, with errors that name the file.

Manifests, deployments, cluster specs and profiles are all JSON files that a
user points at; a missing file, one that is not text, or one that is not JSON
is a user error (EdgecError) naming the file and, for bad JSON, the line and
column, never a traceback. Standard library only, Python 3.6 syntax: the board
runtime reads its manifest and deployment with it.
"""

import json
import os
from typing import Any, Sequence, Union

from edgec.errors import EdgecError

PathLike = Union[str, os.PathLike]


def read_json(path: PathLike, missing: str = "file not found") -> Any:
    """The decoded contents of the JSON file at `path`.

    `missing` is the message when there is no such file: say what to pass instead.
    """
    where = os.fspath(path)
    try:
        with open(where, "r", encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise EdgecError(missing, where=where) from None
    except IsADirectoryError:
        raise EdgecError("is a folder, not a JSON file", where=where) from None
    except UnicodeDecodeError as exc:
        raise EdgecError("not UTF-8 text (byte {} cannot be decoded); expected a JSON file".format(exc.start),
                         where=where) from None
    except OSError as exc:
        raise EdgecError("cannot read it ({})".format(exc.strerror or exc), where=where) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EdgecError("not valid JSON (line {}, column {}): {}".format(exc.lineno, exc.colno, exc.msg),
                         where=where) from None


def json_path(parts: Sequence[Union[str, int]]) -> str:
    """A JSON path as errors print it: ["stages", 2, "inputs"] -> $.stages[2].inputs."""
    return "$" + "".join("[{}]".format(p) if isinstance(p, int) else ".{}".format(p) for p in parts)

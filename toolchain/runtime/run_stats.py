"""out/run-stats.json: what `edgec run` measured, per stage, for `edgec report` to draw beside the predictions.

A run writes it into the plan's folder (a compile replaces the folder whole,
so stale statistics of an older plan cannot survive a recompile); each stage
entry carries its sub-model's sha256, so a reader can tell statistics of
another plan apart. Compute is the stage's own time per frame, measured in its
device process; transport is per segment (a device's consecutive stages), as
edgec.runtime.driver.transport_table reports it.
Python 3.6 syntax, standard library only: it runs on the boards.
"""

import json
import os
from typing import Any, Dict, Optional

from edgec.jsonfile import PathLike, read_json
from edgec.manifest import Manifest

RUN_STATS_FILE = "run-stats.json"
RUN_STATS_VERSION = 1


def run_stats(manifest: Manifest, result: Any) -> Dict[str, Any]:
    """The statistics of one finished run (an edgec.runtime.driver.RunResult) of `manifest`'s plan."""
    from edgec.runtime.driver import transport_table

    lat = sorted(result.latencies_s)
    stages = {}  # type: Dict[str, Dict[str, Any]]
    for seg in result.stats:
        frames = max(int(seg.get("frames", 0)), 1)
        for name, seconds in (seg.get("stage_compute") or {}).items():
            stages[name] = {"device": seg.get("device"), "frames": int(seg.get("frames", 0)),
                            "compute_ms": round(1e3 * float(seconds) / frames, 4)}
    for st in manifest.stages:
        if st.name in stages:
            stages[st.name]["sha256"] = st.sha256
            stages[st.name]["predicted_ms"] = st.predicted_ms
    return {"run_stats_version": RUN_STATS_VERSION, "frames": result.frames, "delivered": result.delivered,
            "wall_s": round(result.wall_s, 4), "fps": round(result.fps, 3),
            "latency_ms": {"p50": round(1e3 * lat[len(lat) // 2], 3) if lat else None,
                           "mean": round(1e3 * sum(lat) / len(lat), 3) if lat else None},
            "stages": stages,
            "segments": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
                         for row in transport_table(result.stats)]}


def write_run_stats(out_dir: PathLike, manifest: Manifest, result: Any) -> Optional[str]:
    """Write out/run-stats.json; returns a note instead of raising when the folder is not writable."""
    path = os.path.join(os.fspath(out_dir), RUN_STATS_FILE)
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(run_stats(manifest, result), indent=2) + "\n")
    except OSError as exc:
        return "cannot write {} ({}); the run's statistics are only printed".format(path, exc.strerror or exc)
    return None


def read_run_stats(out_dir: PathLike, manifest: Manifest) -> Optional[Dict[str, Any]]:
    """out/run-stats.json when there is one, with only the stages whose sub-model is the manifest's now."""
    path = os.path.join(os.fspath(out_dir), RUN_STATS_FILE)
    if not os.path.isfile(path):
        return None
    data = read_json(path)
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict):
        return None
    current = {st.name: st.sha256 for st in manifest.stages}
    kept = {name: s for name, s in stages.items()
            if isinstance(s, dict) and current.get(name) == s.get("sha256")
            and isinstance(s.get("compute_ms"), (int, float))}
    data["stages"] = kept
    data["stale"] = sorted(set(stages) - set(kept))
    return data

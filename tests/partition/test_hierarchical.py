"""The joint search over boards and units: exact on small cases, contention charged as stated, energy and
limits honoured, verify passing for every strategy."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

import edgec
from edgec.ir import Program
from edgec.passes.partition.build import group_graph
from edgec.passes.partition.hierarchical import Limits, joint_plan
from edgec.passes.partition.problem import evaluate
from edgec.passes.partition.workers import Worker, predict_chain, unit_problem
from edgec.zoo import zoo_models

from conftest import MULTI, TRIO, save_text_model

TWO_UNITS = {"name": "two-units", "devices": [{"name": "h", "type": "host", "units": {
    "cpu": {"cores": [0]}, "cpu1": {"kind": "cpu", "cores": [1], "gflops": 12.0, "backend": "neon"}}}],
    "network": {"bandwidth_mbps": 1000, "latency_ms": 0.05}, "source": "h", "sink": "h"}


def _program(model, cluster) -> Program:
    return edgec.compile(model, cluster, model.parent / "out-placed", keep_program=True).program


@pytest.fixture(scope="module")
def trio_program(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trio")
    model = save_text_model(MULTI, tmp / "multi.onnx")
    return _program(model, TRIO)


def _brute_force(problem, objective):
    """Every plan: contiguous segments on distinct units, any order."""
    n, d = problem.n, len(problem.devices)
    best = None
    for k in range(1, min(n, d) + 1):
        for cuts in itertools.combinations(range(1, n), k - 1):
            bounds = [0, *cuts, n]
            for units in itertools.permutations(range(d), k):
                plan = evaluate(problem, [(bounds[i], bounds[i + 1], units[i]) for i in range(k)])
                if plan.feasible and (best is None or plan.key(objective) < best.key(objective)):
                    best = plan
    return best


@pytest.mark.parametrize("objective", ["throughput", "latency"])
def test_the_unit_level_search_is_the_brute_force_optimum(trio_program, objective):
    from edgec.passes.partition.optimal import solve

    problem, _ = unit_problem(trio_program, group_graph(trio_program))
    assert len(problem.devices) == 5  # xu4 big and LITTLE, rpi4 cpu, nano cpu and gpu
    assert problem.n <= 10  # 27 500 plans to try
    found = solve(problem, objective)
    assert found.key(objective) == pytest.approx(_brute_force(problem, objective).key(objective))


def test_the_default_plan_is_at_least_as_good_as_every_plan_family(trio_program, tmp_path):
    program = trio_program
    best = joint_plan(program, "throughput", "hierarchical", Limits()).prediction
    replicas = joint_plan(program, "throughput", "data-parallel", Limits()).prediction
    single = edgec.compile(program.source_path, TRIO, tmp_path / "pipeline", strategy="pipeline").manifest.predicted
    assert best.bottleneck_ms <= min(replicas.bottleneck_ms, single["bottleneck_ms"]) + 1e-9


def test_contention_slows_units_of_one_board_only(trio_program):
    program = trio_program
    gg = group_graph(program)
    groups = list(gg.order)
    half = len(groups) // 2
    a, b = groups[:half], groups[half:]
    alone = lambda w, gs: float(sum(program.group_ms(g, w.unit_id) for g in gs))  # noqa: E731
    same = [(Worker("xu4", "big"), a, alone(Worker("xu4", "big"), a)),
            (Worker("xu4", "little"), b, alone(Worker("xu4", "little"), b))]
    apart = [(Worker("xu4", "big"), a, alone(Worker("xu4", "big"), a)),
             (Worker("rpi4", "cpu"), b, alone(Worker("rpi4", "cpu"), b))]
    handoffs = [0.0, 1000.0, 0.0]
    on_one = predict_chain(program, same, handoffs)
    on_two = predict_chain(program, apart, handoffs)
    assert on_one.stage_ms[0] > same[0][2] and on_one.stage_ms[1] > same[1][2]
    assert "xu4" in on_one.board_floor_ms
    assert on_two.stage_ms == (apart[0][2], apart[1][2]) and not on_two.board_floor_ms
    # a board's time per frame is its slowest unit (plus contention) or its traffic floor, not the sum of its units
    # (on this tiny model the hand-off into the second unit binds the plan: compared without it)
    board_period = max([*on_one.stage_ms, *on_one.board_floor_ms.values()])
    assert board_period < on_one.stage_ms[0] + on_one.stage_ms[1]
    assert on_one.bottleneck_ms == pytest.approx(max(board_period, *on_one.handoff_ms))


def test_every_manifest_carries_energy_and_the_energy_objective_meets_the_fps_floor(tmp_path):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    energies = {}
    for strategy in ("hierarchical", "data-parallel", "pipeline"):
        m = edgec.compile(model, TRIO, tmp_path / strategy, strategy=strategy).manifest
        assert m.predicted["energy_mj"] > 0
        energies[strategy] = m.predicted
    floor = 0.5 * energies["hierarchical"]["throughput_fps"]
    lean = edgec.compile(model, TRIO, tmp_path / "energy", objective="energy", min_fps=floor).manifest
    assert lean.objective == "energy" and lean.predicted["throughput_fps"] >= floor
    assert lean.predicted["energy_mj"] <= min(p["energy_mj"] for p in energies.values()
                                              if p["throughput_fps"] >= floor) + 1e-9


@pytest.mark.parametrize("name", ["squeezenet", "inception_v1"])
@pytest.mark.parametrize("strategy", ["hierarchical", "data-parallel", "pipeline"])
def test_verify_passes_for_every_strategy_on_zoo_models(random_zoo, tmp_path, name, strategy):
    for cluster in (TRIO, TRIO.parent / "mixed-8.json"):
        out = edgec.compile(random_zoo(name), cluster, tmp_path / f"out-{cluster.stem}", strategy=strategy).out_dir
        report = edgec.verify(out)
        assert report.passed, (cluster.stem, report)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edgec.cli", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("extra, says", [
    (["--min-fps", "1e9"], "no plan meets --min-fps 1e+09: the fastest plan reaches"),
    (["--max-latency-ms", "0.001"], "no plan meets --max-latency-ms 0.001: the quickest plan takes"),
    (["--strategy", "pipeline", "--min-fps", "1e9"], "no plan meets --min-fps 1e+09: the fastest plan reaches"),
    (["--min-fps", "-3"], "--min-fps -3: expected a positive number"),
])
def test_bad_plan_options_are_one_line_exit_2_and_no_output(tmp_path, extra, says):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    proc = _cli("compile", model, "-t", TRIO, "-o", tmp_path / "out", *extra)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgec: ") and says in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))


def test_an_unknown_strategy_is_refused_naming_the_choices_with_no_output(tmp_path):
    from edgec.api import compile as compile_api
    from edgec.errors import EdgecError

    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    proc = _cli("compile", model, "-t", TRIO, "-o", tmp_path / "out", "--strategy", "fastest")
    text = " ".join(proc.stderr.replace("│", " ").split())
    assert proc.returncode == 2 and "fastest" in text
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("edgec: "), proc.stderr
    assert all(f"'{s}'" in text for s in ("hierarchical", "data-parallel", "pipeline"))
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
    with pytest.raises(EdgecError, match="unknown --strategy 'fastest'; expected one of: hierarchical, data-parallel"):
        compile_api(model, TRIO, tmp_path / "out", strategy="fastest")  # the library says it in one line
    assert not (tmp_path / "out").exists()


def test_energy_objective_with_a_unit_without_power_figures_names_it(tmp_path):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    cluster = tmp_path / "two.json"
    cluster.write_text(json.dumps(TWO_UNITS))
    proc = _cli("compile", model, "-t", cluster, "-o", tmp_path / "out", "--objective", "energy")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unit 'h.cpu' has no power figures" in lines[0] and '"power"' in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_measured_profile_s_power_figures_are_used(tmp_path):
    from edgec.cluster import load_cluster
    from edgec.costmodel.energy import unit_power

    profile = tmp_path / "board.json"
    profile.write_text(json.dumps({"version": 1, "host": {}, "units": {"cpu": {
        "peak_gflops": 30.0, "bandwidth_gbs": 5.0, "overhead_ms": 0.01, "power": {"active_w": 7.5, "idle_w": 2.0}}}}))
    spec = json.loads(json.dumps(TWO_UNITS))
    spec["devices"][0]["profile"] = str(profile)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(spec))
    cluster = load_cluster(path)
    device = cluster.devices["h"]
    power = unit_power(device, device.units["cpu"])
    assert (power.active_w, power.idle_w) == (7.5, 2.0) and "measured" in power.source
    assert unit_power(device, device.units["cpu1"]) is None


def test_edgec_profile_records_measured_power_for_a_unit(tmp_path):
    from edgec.costmodel.energy import parse_power_option, record_measured_power
    from edgec.errors import EdgecError

    path = tmp_path / "p.json"
    path.write_text(json.dumps({"version": 1, "host": {}, "units": {"cpu": {"peak_gflops": 30.0}}}))
    assert parse_power_option("cpu=3.7,2.7") == ("cpu", (3.7, 2.7))
    doc = record_measured_power(path, dict([parse_power_option("cpu=3.7,2.7")]))
    assert json.loads(path.read_text())["units"]["cpu"]["power"] == {"active_w": 3.7, "idle_w": 2.7} == \
        doc["units"]["cpu"]["power"]
    for bad in ("cpu=3.7", "cpu=-1,2", "=1,2", "cpu"):
        with pytest.raises(EdgecError, match="expected NAME=ACTIVE_W,IDLE_W"):
            parse_power_option(bad)
    with pytest.raises(EdgecError, match="no such unit in the profile"):
        record_measured_power(path, {"gpu": (1.0, 1.0)})


def test_replicating_the_bottleneck_step_lowers_the_bottleneck_and_deals_by_speed(random_zoo, tmp_path):
    from edgec.passes.partition.hierarchical import _replicate_bottleneck, _single_level

    program = _program(random_zoo("resnet50"), TRIO)
    (base,) = _single_level(program, "throughput")  # xu4.big, nano.gpu, rpi4.cpu: the nano's GPU binds
    grown = _replicate_bottleneck(program, base)
    assert grown and grown[0].stages[1].replicas[0].unit_id == "nano.cpu"  # the step the GPU holds
    bottlenecks = [base.prediction.bottleneck_ms] + [c.prediction.bottleneck_ms for c in grown]
    assert all(b > a for a, b in zip(bottlenecks[1:], bottlenecks))  # each replica added pays
    for cand in grown:
        replicated = [st for st in cand.stages if st.replicas]
        assert replicated
        for st in replicated:
            shares = [st.weight] + [r.weight for r in st.replicas]
            assert sum(shares) == pytest.approx(1.0)
            copies = [st.predicted_ms] + [r.predicted_ms for r in st.replicas]
            # dealt in proportion to speed: the faster copy takes the larger share
            assert np.argmax(shares) == np.argmin(copies)


def test_two_replicas_share_frames_in_proportion_to_their_speed(trio_program):
    from edgec.passes.partition.workers import Copy, predict_steps

    program = trio_program
    groups = list(program.groups)
    fast, slow = Worker("nano", "gpu"), Worker("rpi4", "cpu")
    ms = {w: float(sum(program.group_ms(g, w.unit_id) for g in groups)) for w in (fast, slow)}
    pred = predict_steps(program, [[Copy(fast, groups, ms[fast]), Copy(slow, groups, ms[slow])]], [0.0, 0.0])
    w_fast, w_slow = pred.weights[0]
    assert w_fast / w_slow == pytest.approx(ms[slow] / ms[fast], rel=1e-6)
    assert pred.bottleneck_ms == pytest.approx(1.0 / (1.0 / ms[fast] + 1.0 / ms[slow]), rel=1e-6)


def test_the_nano_s_5w_mode_takes_its_own_power_figures(tmp_path):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    spec = json.loads(TRIO.read_text())
    energies = {}
    for mode in ("MAXN", "5W"):
        for d in spec["devices"]:
            if d["type"] == "jetson-nano":
                d["power_mode"] = mode
        path = tmp_path / f"trio-{mode}.json"
        path.write_text(json.dumps(spec))
        m = edgec.compile(model, path, tmp_path / mode, strategy="pipeline").manifest
        assert any(s.device == "nano" for s in m.stages)
        energies[mode] = m.predicted["energy_mj"]
    assert energies["5W"] < energies["MAXN"]
    for d in spec["devices"]:
        if d["type"] == "raspberry-pi-4":
            d["power_mode"] = "5W"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    proc = _cli("compile", model, "-t", path, "-o", tmp_path / "out", "--objective", "energy")
    assert proc.returncode == 2 and "device 'rpi4' names power_mode 5W" in proc.stderr
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "out").exists()

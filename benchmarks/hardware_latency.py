"""Latency of the hardware layer: submit -> the command applied, per backend, and the default
diffusion policy's observation -> command latency through `robalign deploy`.

    python benchmarks/hardware_latency.py                      # all backends, 5 s each
    python benchmarks/hardware_latency.py --backends sim remote --seconds 10

"Applied" is the first control cycle whose reference was computed with the submitted targets
in the schedule (the backend's own control loop: 1 kHz for sim and libfranka, 500 Hz for
franky's tracker feed). For `remote` it is measured end to end, the workstation's send to that
cycle on the server (one machine, so both ends share the monotonic clock). franky runs against
franky-sim and libfranka against franka-sim, each in a private network namespace (this script
re-runs itself under `unshare -n` for them). The policy figure is the time from an
observation's capture to its first command's submit, at the replanning steps (where the DDIM
chunk is computed) and overall, on robot=sim in real time with an untrained default-config
policy (the compute does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from robalign.hardware.safety import TimedTarget

REPO = Path(__file__).resolve().parents[1]
SIMULATOR = {"franky": "franky-sim", "libfranka": "franka-sim"}


def stream(robot, seconds: float, chunk: int = 8, period: float = 0.1) -> None:
    """A policy's traffic: every period, a chunk of `chunk` targets 0.1 s apart, small sine motion."""
    q0, t0 = robot.read_state().q.copy(), robot.clock()
    axis = np.array([1, 0, 0, 0, 0, 0, 1.0])
    end = t0 + seconds
    while robot.clock() < end:
        now = robot.clock()
        robot.submit([TimedTarget(now + period * (k + 1), q0 + 0.1 * np.sin(now + period * (k + 1) - t0) * axis)
                      for k in range(chunk)])
        robot.wait(max(0.0, now + period - robot.clock()))


def measure(name: str, seconds: float) -> dict:
    from robalign.hardware.backend import make_backend
    from robalign.hardware.remote import RobotServer
    closers, server = [], None
    if name == "sim":
        robot = make_backend("sim", virtual_clock=False)
    elif name == "remote":
        arm = make_backend("sim", virtual_clock=False)
        server = RobotServer(arm, ports={k: 0 for k in ("control", "commands", "heartbeat", "state")}).start()
        closers += [arm.close, server.close]
        robot = make_backend("remote", ports=server.ports)
    else:
        sys.path.insert(0, str(REPO / "tests"))
        from franka_protocol.simulators import Simulator
        sim = Simulator(SIMULATOR[name], log_dir=Path(tempfile.mkdtemp()))
        closers.append(sim.close)
        robot = make_backend(name, host="127.0.0.1", realtime=False)
    try:
        robot.connect()
        stream(robot, seconds)
        if server is not None:
            wire, applied = np.array(server.wire_latency), np.array(server.backend.apply_latency)
            n = min(len(wire), len(applied))
            lat = wire[:n] + applied[:n]
        else:
            lat = np.array(robot.apply_latency)
        tracking = robot.tracking_error() if hasattr(robot, "tracking_error") else server.backend.tracking_error()
    finally:
        robot.close()
        for close in reversed(closers):
            close()
    return {"backend": name, "commands": int(len(lat)), "p50_ms": float(np.percentile(lat, 50) * 1000),
            "p99_ms": float(np.percentile(lat, 99) * 1000), "tracking_mean_rad": tracking["mean"]}


def zeros_env_state():
    return np.zeros(ENV_STATE_DIM, np.float32)


ENV_STATE_DIM = 0


def policy_latency(seconds: float) -> dict:
    """Observation -> command through `deploy` with the default diffusion config on robot=sim."""
    global ENV_STATE_DIM
    import torch

    import robalign.envs as envs
    from robalign.hardware.runtime import DeployConfig, deploy
    from robalign.policies import make_policy
    env = envs.make("reach-around", camera=False)
    env.reset(seed=0)
    ENV_STATE_DIM = int(env.task_state().shape[0])
    env.close()
    # untrained weights act at random across the action range: keep it small so the arm moves
    # gently instead of being clamped (and, after 10 clamps in a row, stopped)
    scale = {"state": 1.0, "environment_state": 1.0, "action": 0.05}
    stats = {k: {"min": -scale[k] * torch.ones(d), "max": scale[k] * torch.ones(d)} for k, d in
             (("state", 16), ("environment_state", ENV_STATE_DIM), ("action", 7))}
    torch.set_num_threads(1)  # one core, as the speed bar states it
    # the config class's defaults are configs/policy_preset/diffusion.yaml's (benchmarks/policy_speed.py)
    policy = make_policy("diffusion", stats, state_dim=16, env_state_dim=ENV_STATE_DIM, action_dim=7)
    with tempfile.TemporaryDirectory() as tmp:
        policy.save_pretrained(Path(tmp) / "policy")
        summary = deploy(DeployConfig(policy=str(Path(tmp) / "policy"), duration=seconds, output_dir=str(Path(tmp) / "d"),
                                      env_state="__main__:zeros_env_state", robot_settings={"virtual_clock": False}),
                         progress=False)
    return {"policy": "diffusion (default config, DDIM-10, 1 thread)", "steps": summary["steps"],
            "fault": summary["fault"],
            "inference_ms_p50": summary["inference_ms_p50"], "inference_ms_p99": summary["inference_ms_p99"],
            "obs_to_command_ms_p50": summary["obs_to_command_ms_p50"],
            "obs_to_command_ms_p99": summary["obs_to_command_ms_p99"], "idle_slots": summary["idle_slots"],
            "warmup_ms": summary["warmup_ms"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", nargs="+", default=["sim", "remote", "franky", "libfranka"])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--no-policy", action="store_true", help="skip the deploy latency of the default policy")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)  # already in the private netns
    args = ap.parse_args()
    rows = []
    for name in args.backends:
        if name in SIMULATOR and not args.inside:  # franky and pylibfranka cannot share a process either
            inner = (f"ip link set lo up && exec {sys.executable} {__file__} --inside --no-policy "
                     f"--seconds {args.seconds} --backends {name}")
            out = subprocess.run(["unshare", "-n", "bash", "-c", inner], capture_output=True, text=True, timeout=300,
                                 env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if out.returncode != 0:
                raise SystemExit(f"{name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
            rows += [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        else:
            rows.append(measure(name, args.seconds))
    if args.inside:
        for row in rows:
            print(json.dumps(row))
        return
    print(f"{'backend':<10} {'commands':>8} {'p50 ms':>8} {'p99 ms':>8} {'tracking rad':>13}")
    for r in rows:
        print(f"{r['backend']:<10} {r['commands']:>8} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['tracking_mean_rad']:>13.5f}")
    if not args.no_policy:
        p = policy_latency(args.seconds)
        print(json.dumps(p, indent=1))


if __name__ == "__main__":
    main()

"""`robalign VERB key=value ...`: one verb per arrow of the loop, configured with Hydra.

Each verb has a config `configs/VERB.yaml`; command-line `key=value` pairs override it
(Hydra syntax: `env=mug-grasp`, `env.distractors=true`, `modes=[left,right]`). Keys are
checked: a typo is an error, not a silently ignored setting. Every verb writes its
resolved config to `output_dir/config.yaml`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from robalign.errors import RobalignError

USAGE = """usage: robalign VERB [key=value ...]

verbs:
{verbs}

Show a verb's settings with `robalign VERB --help`. Python: `python -m robalign` is the same.
"""


def compose(verb: str, overrides: list[str]) -> DictConfig:
    """The verb's config with overrides applied; unknown keys or group options are errors."""
    from hydra import compose as hydra_compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    for override in overrides:
        if override.startswith(("+", "~")):
            raise RobalignError(f"{override!r}: adding or deleting settings is not allowed; "
                                f"valid settings: {', '.join(_settings(verb))}")
    # A verb's open settings take keys the yaml cannot list (a checkpoint's config fields;
    # checked when the policy loads): `policy_config.temperature=0` adds the key.
    opened = OPEN_SETTINGS.get(verb)
    if opened:
        overrides = [f"+{o}" if o.startswith(f"{opened}.") else o for o in overrides]
    for key, group in GROUP_ALIASES.get(verb, {}).items():  # `policy=NAME` picks configs/policy_preset/NAME.yaml
        overrides = [f"{group}@{o}" if o.startswith(f"{key}=") else o for o in overrides]
    try:
        with initialize_config_module("robalign.configs", version_base="1.3"):
            cfg = hydra_compose(config_name=config_name(verb), overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise RobalignError(_explain_hydra_error(verb, err)) from None
    OmegaConf.set_struct(cfg, True)
    env = cfg.get("env")  # the env group's settings (`prefs queries` may have none)
    layout = env.layout if isinstance(env, DictConfig) else "default"
    if layout != "default" and verb not in LAYOUT_VERBS:  # anywhere else it would be ignored
        raise RobalignError(f"env.layout={layout} is read by {' and '.join(LAYOUT_VERBS)} only; "
                            f"`robalign {verb}` records and runs the default layout")
    return cfg


# Settings that pick a config group in one verb only: `pretrain policy=NAME` picks a policy
# preset and `align method=NAME` an alignment method. The groups are not called `policy` and
# `method`, because Hydra would then read every `policy=PATH` (eval, align) and every
# `method=NAME` (reward) as a group choice.
GROUP_ALIASES = {"pretrain": {"policy": "policy_preset"}, "align": {"method": "align_method"}}
# Settings whose keys are free here and checked by the code they reach (eval's and align's
# policy_config: the checkpoint's config fields, so an unknown one is an error naming the valid ones).
OPEN_SETTINGS = {"eval": "policy_config", "align": "policy_config"}
# Verbs that run episodes on a task's other layouts (env.layout); demos, rollouts for
# preferences and the pipeline use the default one.
LAYOUT_VERBS = ("eval", "align")


def config_name(verb: str) -> str:
    """`prefs serve` -> configs/prefs_serve.yaml"""
    return verb.replace(" ", "_")


def _explain_hydra_error(verb: str, err: Exception) -> str:
    text = str(err).strip()
    if text.startswith("Could not override '"):
        key = text.split("'", 2)[1]
        return f"unknown setting {key!r} for `robalign {verb}`; valid settings: {', '.join(_settings(verb))}"
    for group, what in (("policy_preset", "policy"), ("align_method", "alignment method")):
        if f"Could not find '{group}/" in text:
            from robalign.configs import group_options

            name = text.split(f"Could not find '{group}/", 1)[1].split("'", 1)[0]
            return f"unknown {what} {name!r}; valid choices: {', '.join(group_options(group))}"
    if "Could not find 'env/" in text:
        import robalign.envs as envs

        name = text.split("Could not find 'env/", 1)[1].split("'", 1)[0]
        return f"unknown env {name!r}; valid choices: {', '.join(envs.available())}"
    return f"bad settings for `robalign {verb}`: {text}"


def _settings(verb: str) -> list[str]:
    """Every settable key of a verb's config, dotted (env.name, n, ...)."""
    from hydra import compose as hydra_compose, initialize_config_module

    with initialize_config_module("robalign.configs", version_base="1.3"):
        cfg = OmegaConf.to_container(hydra_compose(config_name=config_name(verb)))

    def walk(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict) and f"{prefix}{key}" == OPEN_SETTINGS.get(verb):
                yield f"{prefix}{key}.*"
            elif isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    return list(walk(cfg))


# ---- verbs -------------------------------------------------------------------------------
def run_demos(cfg: DictConfig) -> Path:
    """Record expert demonstrations (and mp4 previews) into output_dir."""
    from robalign.data.demos import record_demos, validate_demo_request
    from robalign.data.outputs import atomic_output_dir, default_output_dir
    from robalign.data.videos import preview_episode

    modes = cfg.modes
    if isinstance(modes, str):
        modes = [modes]
    modes = validate_demo_request(cfg.env.name, cfg.n, list(modes) if modes else None)
    if not isinstance(cfg.preview, int) or cfg.preview < 0:
        raise RobalignError(f"preview must be an int >= 0; got {cfg.preview!r}")
    if not isinstance(cfg.camera, bool):
        raise RobalignError(f"camera must be true or false; got {cfg.camera!r}")
    out = Path(cfg.output_dir or default_output_dir("demos"))
    with atomic_output_dir(out) as tmp:
        _save_config(cfg, tmp)
        recorded = record_demos(
            tmp, cfg.env.name, cfg.n, modes=modes, seed=cfg.seed, distractors=cfg.env.distractors,
            image_size=cfg.env.image_size, progress=cfg.progress, perturb=cfg.perturb, camera=cfg.camera,
            num_envs=cfg.num_envs,
        )
        shown: dict[str, int] = {}
        for traj in recorded:
            if shown.get(traj.mode, 0) < cfg.preview:
                shown[traj.mode] = shown.get(traj.mode, 0) + 1
                seed = traj.provenance["seed"]
                preview_episode(cfg.env.name, traj.mode, seed, tmp / "videos" / f"{traj.mode}-seed{seed}.mp4",
                                distractors=cfg.env.distractors, perturb=cfg.perturb)
        summary = {
            "env": cfg.env.name,
            "env_revision": recorded[0].provenance["env_revision"],  # the task layout the demos show
            "episodes": len(recorded),
            "frames": int(sum(len(t) for t in recorded)),
            "modes": {m: sum(t.mode == m for t in recorded) for m in modes},
            "seeds": [t.provenance["seed"] for t in recorded],
            "perturb": cfg.perturb,
            "camera": cfg.camera,
            "robot_meshes": recorded[0].provenance["robot_meshes"],  # how its frames drew the robot
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
    previews = f"; previews in {out}/videos" if shown else ""
    print(f"wrote {summary['episodes']} demos ({summary['frames']} frames) to {out}/dataset{previews}")
    return out


def run_envs(cfg: DictConfig) -> None:
    """List the tasks with their modes and objectives (what each measures, when a rollout
    satisfies it, and the simulated person's rationality for it)."""
    import robalign.envs as envs
    from robalign.annotators import default_rationality
    from robalign.envs.objectives import get_objective

    for name in envs.available():
        cls = envs.env_class(name)
        print(f"{name}\n  modes: {', '.join(cls.modes)}\n  objectives:")
        for objective_name in envs.objectives_for(name):
            o = get_objective(objective_name)
            facts = [f"satisfied at >= {o.threshold:g}" if o.threshold is not None else "no threshold",
                     f"rationality {default_rationality(o):g}"]  # what rationality=null gives
            summary = " ".join(o.description.split()).split(". ")[0].rstrip(".")
            print(f"    {objective_name}: {summary} ({'; '.join(facts)})")


def _open_store(cfg: DictConfig, create: bool = True):
    from robalign.preferences import PreferenceStore

    if not cfg.store:
        raise RobalignError("store=PATH is required: the preference store directory")
    return PreferenceStore(cfg.store, url=cfg.store_url, create=create)


def run_rollouts(cfg: DictConfig) -> list[str]:
    """Roll a policy out and register the episodes in a preference store."""
    from robalign.preferences.rollouts import record_rollouts

    with _open_store(cfg) as store:
        ids = record_rollouts(store, cfg.env.name, cfg.n, policy=cfg.policy, noise=cfg.noise, drift=cfg.drift,
                              seed=cfg.seed,
                              video=cfg.video, distractors=cfg.env.distractors, image_size=cfg.env.image_size,
                              progress=cfg.progress, max_steps=cfg.max_steps, num_envs=cfg.num_envs)
    print(f"registered {len(ids)} {cfg.env.name} rollouts in {cfg.store}")
    return ids


def run_prefs_serve(cfg: DictConfig) -> None:
    """Serve the annotation web page and JSON API over a preference store."""
    from robalign.preferences.server import serve

    with _open_store(cfg, create=False) as store:
        if cfg.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"warning: serving on {cfg.host}: anyone who can reach this address and has a token can answer",
                  file=sys.stderr)
        print(f"annotation page: http://{cfg.host}:{cfg.port}/?token=TOKEN  (tokens: robalign prefs annotator)",
              flush=True)
        serve(store, host=cfg.host, port=cfg.port, answers_per_query=cfg.answers_per_query)


def run_prefs_annotator(cfg: DictConfig) -> str:
    """Register an annotator and print their token and page URL."""
    if not cfg.name:
        raise RobalignError("name=NAME is required: the annotator's name")
    with _open_store(cfg, create=False) as store:
        annotator_id, token = store.add_annotator(cfg.name, kind=cfg.kind)
    print(f"annotator {cfg.name} ({annotator_id})\ntoken: {token}\npage: http://127.0.0.1:8000/?token={token}")
    return token


def run_prefs_queries(cfg: DictConfig) -> list[str]:
    """Choose the next queries (random or active) and add them to a preference store."""
    from robalign.preferences.selection import select_queries

    with _open_store(cfg, create=False) as store:
        env = cfg.env.name if cfg.get("env") else None  # `env=NAME` picks the env group; none: every env
        groups = select_queries(store, cfg.n, strategy=cfg.strategy, kind=cfg.kind, seed=cfg.seed, env=env)
        ids = store.add_queries(groups, strategy=cfg.strategy)
    print(f"added {len(ids)} {cfg.kind} queries ({cfg.strategy}) to {cfg.store}")
    return ids


def run_prefs_simulate(cfg: DictConfig) -> dict:
    """A simulated person answers queries through the annotation server's API."""
    import math

    from robalign.annotators import SimulatedAnnotator
    from robalign.preferences.client import PreferenceClient
    from robalign.preferences.simulate import running_server, simulate_annotator

    if not cfg.objective:
        raise RobalignError("objective=NAME is required; `robalign envs` lists each env's objectives")
    if cfg.n is not None and (not isinstance(cfg.n, int) or cfg.n <= 0):
        raise RobalignError(f"n must be an int > 0 or null; got {cfg.n!r}")
    given = None if cfg.rationality is None else float(cfg.rationality)  # None: the objective's registered one
    person = SimulatedAnnotator(cfg.objective, rationality=given, tie_margin=cfg.tie_margin,
                                seed=cfg.seed)
    rationality = "inf" if math.isinf(person.rationality) else f"{person.rationality:g}"
    if cfg.url:
        if not cfg.token:
            raise RobalignError("token=TOKEN is required with url=: the simulated annotator's token on that server")
        with PreferenceClient(cfg.url, cfg.token) as client:
            counts = simulate_annotator(client, person, cfg.n, progress=cfg.progress)
    else:
        with _open_store(cfg, create=False) as store:
            name = cfg.name or f"sim-{cfg.objective}-b{rationality}-s{cfg.seed}"
            _, token = store.simulated_annotator(name)
            with running_server(store, cfg.answers_per_query) as url, PreferenceClient(url, token) as client:
                counts = simulate_annotator(client, person, cfg.n, progress=cfg.progress)
    print(f"answered {sum(counts.values())} queries: {counts}")
    return counts


def run_prefs_export(cfg: DictConfig) -> Path:
    """Export a preference store as parquet tables plus its blobs."""
    if not cfg.output_dir:
        raise RobalignError("output_dir=PATH is required: a new directory for the export")
    with _open_store(cfg, create=False) as store:
        out = store.export_parquet(cfg.output_dir)
    print(f"exported {cfg.store} to {out}")
    return out


def run_prefs_import(cfg: DictConfig) -> dict:
    """Merge an export into a preference store."""
    if not cfg.input:
        raise RobalignError("input=PATH is required: a directory written by `robalign prefs export`")
    with _open_store(cfg) as store:
        added = store.import_parquet(cfg.input)
    print(f"imported into {cfg.store}: {added}")
    return added


def _reward_store(cfg: DictConfig):
    if not cfg.prefs:
        raise RobalignError("prefs=PATH is required: the preference store directory")
    from robalign.preferences import PreferenceStore

    return PreferenceStore(cfg.prefs, url=cfg.store_url, create=False)


def run_reward(cfg: DictConfig) -> Path:
    """Learn a visual reward (rapl, rlhf, imagenet-ot, oracle) from a preference store."""
    from robalign.data.outputs import check_output_dir, default_output_dir
    from robalign.rewards.models import RewardConfig
    from robalign.rewards.runs import learn_reward
    from robalign.rewards.training import TrainConfig

    out = check_output_dir(cfg.output_dir or default_output_dir("reward"))
    model_cfg = RewardConfig(**{k: cfg[k] for k in (
        "method", "encoder", "encoder_weights", "features", "keypoints", "embed_dim", "hidden_dim", "frame_stride",
        "image_size", "relative",
        "sinkhorn_eps", "sinkhorn_iters", "anchor", "objective")})
    with _reward_store(cfg) as store:
        learn_reward(store, model_cfg, TrainConfig(**OmegaConf.to_container(cfg.train)), out, cfg.demos_top,
                     progress=cfg.progress, config_text=OmegaConf.to_yaml(cfg, resolve=True), demos=cfg.demos)
    print(f"wrote the {cfg.method} reward to {out}")
    return out


def run_reward_eval(cfg: DictConfig) -> dict:
    """Score a reward against held-out answers and the true objective; metrics and plots."""
    from robalign.data.outputs import check_output_dir, default_output_dir
    from robalign.rewards.runs import evaluate_reward

    if not cfg.reward:
        raise RobalignError("reward=PATH is required: a directory written by `robalign reward`")
    out = check_output_dir(cfg.output_dir or default_output_dir("reward-eval"))
    with _reward_store(cfg) as store:
        metrics = evaluate_reward(cfg.reward, store, out, cfg.objective, cfg.encoder_weights, progress=cfg.progress,
                                  config_text=OmegaConf.to_yaml(cfg, resolve=True))
    shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in metrics.items()}
    print(f"{shown}\nwrote {out}/reward_metrics.json")
    return metrics


def run_reward_encoder(cfg: DictConfig) -> dict:
    """Pretrain a scene-cnn encoder on demo frames, for rewards that must see geometry."""
    from robalign.data.outputs import default_output_dir
    from robalign.rewards.scene_encoder import pretrain_encoder_run

    demos = cfg.demos
    demos = [] if demos is None else [demos] if isinstance(demos, str) else list(demos)
    out = cfg.output_dir or default_output_dir("reward-encoder")
    summary = pretrain_encoder_run(demos, out, epochs=cfg.epochs, lr=cfg.lr, batch=cfg.batch,
                                   frame_stride=cfg.frame_stride, val_fraction=cfg.val_fraction, seed=cfg.seed,
                                   progress=cfg.progress, config_text=OmegaConf.to_yaml(cfg, resolve=True))
    worst = max(summary["held_out_rmse"], key=lambda n: summary["held_out_rmse"][n] / summary["spread"][n])
    print(f"wrote {out}/encoder.safetensors: {summary['frames']} frames of {summary['episodes']} episodes; "
          f"held-out error, the worst relative to its spread: {worst} {summary['held_out_rmse'][worst]:.3g} "
          f"(spread {summary['spread'][worst]:.3g}); all in encoder.json and errors.png")
    return summary


def run_pretrain(cfg: DictConfig) -> Path:
    """Imitation-pretrain a policy (diffusion, ...) on demonstrations."""
    import torch

    from robalign.data.outputs import check_output_dir, default_output_dir
    from robalign.policies.training import TrainConfig, pretrain

    if cfg.dataset is None:
        raise RobalignError("dataset=PATH is required: a directory written by `robalign demos`")
    out = Path(cfg.output_dir or default_output_dir("pretrain"))
    if cfg.resume:
        if not (out / "checkpoints").is_dir():
            raise RobalignError(f"resume=true needs output_dir to be an earlier pretrain run; "
                                f"{str(out)!r} has no checkpoints/")
    else:
        check_output_dir(out)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    train = TrainConfig(steps=cfg.steps, **OmegaConf.to_container(cfg.train))
    overrides = OmegaConf.to_container(cfg.policy.config)
    _check_dataset_env(cfg.dataset, cfg.env.name)
    policy_dir = pretrain(cfg.policy.name, cfg.dataset, out, train, overrides, resume=cfg.resume,
                          max_episodes=cfg.max_episodes, progress=cfg.progress,
                          before_training=lambda: _save_config(cfg, out))
    print(f"wrote the {cfg.policy.name} policy to {policy_dir}")
    return policy_dir


def _check_dataset_env(dataset: str, env_name: str) -> None:
    """Demos of one task cannot pretrain a policy for another (a `robalign demos` run
    records its env in config.yaml beside the dataset)."""
    from robalign.data.demos import recorded_env as read_recorded_env

    recorded_env = read_recorded_env(dataset)
    if recorded_env and recorded_env != env_name:
        raise RobalignError(f"dataset {dataset!r} holds {recorded_env} demos, but env={env_name}; "
                            f"pass env={recorded_env} or demos of {env_name}")


def run_eval(cfg: DictConfig) -> dict:
    """Evaluate a policy on held-out seeds: metrics.json, videos, summary.png."""
    from robalign.data.outputs import check_output_dir, default_output_dir
    from robalign.policies.evaluation import EvalConfig, evaluate

    if cfg.policy is None:
        raise RobalignError("policy=PATH is required: a policy directory written by `robalign pretrain`")
    out = check_output_dir(cfg.output_dir or default_output_dir("eval"))
    ecfg = EvalConfig(episodes=cfg.episodes, seed=cfg.seed, launcher=cfg.launcher, num_envs=cfg.num_envs,
                      videos=cfg.videos, distractors=cfg.env.distractors, max_steps=cfg.max_steps,
                      instructions=cfg.env.get("instructions", "train"), layout=cfg.env.layout,
                      policy_overrides=OmegaConf.to_container(cfg.policy_config))
    metrics = evaluate(cfg.policy, cfg.env.name, out, ecfg, progress=cfg.progress,
                       config_text=OmegaConf.to_yaml(cfg, resolve=True))
    lo, hi = metrics["success_ci95"]
    print(f"success {metrics['success_rate']:.0%} (95% CI {lo:.0%}-{hi:.0%}) over {metrics['episodes']} episodes; "
          f"modes {json.dumps({k: round(v, 2) for k, v in metrics['mode_share'].items()})}; wrote {out}")
    return metrics


def run_align(cfg: DictConfig) -> dict:
    """Align a policy with a reward or a person's objective (tpo, diffusion-dpo, dppo)."""
    from robalign.alignment import AlignConfig, MethodConfig, align, make_scorer
    from robalign.data.outputs import default_output_dir
    from robalign.policies.pretrained import config_from_dict

    if cfg.policy is None:
        raise RobalignError("policy=PATH is required: a policy directory written by `robalign pretrain`")
    if cfg.resume and not cfg.output_dir:
        raise RobalignError("resume=true needs output_dir=PATH: the alignment run to continue")
    method = config_from_dict(MethodConfig, OmegaConf.to_container(cfg.method), "method")
    acfg = AlignConfig(**{k: cfg[k] for k in ("rounds", "states", "rollouts", "top_m", "margin", "explore_chunks",
                                                "explore_temperature", "pairs", "seed",
                                                "eval_episodes", "eval_seed", "launcher", "num_envs", "max_steps",
                                                "threshold")}, distractors=cfg.env.distractors,
                       layout=cfg.env.layout)
    scorer = make_scorer(cfg.scorer, reward=cfg.reward, objective=cfg.objective,
                         grape=OmegaConf.to_container(cfg.grape))
    out = Path(cfg.output_dir or default_output_dir("align"))
    result = align(cfg.policy, cfg.env.name, scorer, method, acfg, out, objective=cfg.objective, demos=cfg.demos,
                   resume=cfg.resume, progress=cfg.progress, config_text=OmegaConf.to_yaml(cfg, resolve=True),
                   policy_overrides=OmegaConf.to_container(cfg.policy_config))
    b, a = result["before"], result["after"]
    shown = ", ".join(f"{k} {b[k]:.2f} -> {a[k]:.2f}" for k in ("success_rate", "satisfied_share", "objective_mean")
                      if b.get(k) is not None)
    print(f"{cfg.method.name} on {cfg.env.name}: {shown}; KL/step {result['drift']['kl_per_step']}; wrote {out}")
    return result


def run_pipeline(cfg: DictConfig) -> dict:
    """The whole loop on a small default: demos, pretrain, preferences, RAPL reward, align, report."""
    from robalign.pipeline import run_pipeline as pipeline

    return pipeline(cfg)


def _robot_settings(cfg: DictConfig) -> dict:
    """`robot_settings` without the unset ones; a sim serves or deploys in real time unless told otherwise."""
    settings = {k: v for k, v in OmegaConf.to_container(cfg.robot_settings).items() if v is not None}
    if cfg.robot == "sim":
        settings.setdefault("virtual_clock", False)
    return settings


def run_deploy(cfg: DictConfig) -> dict:
    """Run a policy on a robot backend (sim, franky, libfranka, remote); record the episode."""
    from robalign.hardware.runtime import DeployConfig, deploy

    if not cfg.policy:
        raise RobalignError("deploy needs policy=PATH (a policy checkpoint directory)")
    fields = {k: cfg[k] for k in ("policy", "robot", "duration", "output_dir", "dry_run", "merge", "replan_every",
                                  "camera", "env_state", "instruction", "max_frame_age", "action_gain", "fps", "seed")}
    summary = deploy(DeployConfig(**fields, robot_settings=_robot_settings(cfg)), progress=cfg.progress)
    print(json.dumps({k: v for k, v in summary.items() if k != "events"}, indent=1))
    return summary


def run_robot_serve(cfg: DictConfig) -> None:
    """Serve a robot backend to a workstation's robot=remote over ZeroMQ (on the arm's PC)."""
    from robalign.hardware.remote import serve

    serve(cfg.robot, bind=cfg.bind, link_timeout=cfg.link_timeout, **_robot_settings(cfg))


VERBS: dict[str, Callable[[DictConfig], object]] = {
    "demos": run_demos, "envs": run_envs, "rollouts": run_rollouts,
    "prefs serve": run_prefs_serve, "prefs annotator": run_prefs_annotator, "prefs queries": run_prefs_queries,
    "prefs simulate": run_prefs_simulate, "prefs export": run_prefs_export, "prefs import": run_prefs_import,
    "reward": run_reward, "reward eval": run_reward_eval, "reward encoder": run_reward_encoder, "pretrain": run_pretrain, "eval": run_eval,
    "align": run_align, "pipeline": run_pipeline, "deploy": run_deploy, "robot serve": run_robot_serve,
}
GROUPS = {verb.split()[0] for verb in VERBS if " " in verb}  # two-word verbs: `robalign prefs serve`


def _save_config(cfg: DictConfig, directory: Path) -> None:
    (directory / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def _exit_on_sigterm() -> None:
    """Turn SIGTERM (`kill`, a batch scheduler's stop) into SystemExit(143), so `finally`
    blocks run: a run directory half-written in its hidden temp dir is deleted, not left."""
    import signal

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the process is ours (console script, python -m robalign), not a caller's
        _exit_on_sigterm()
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = USAGE.format(verbs="\n".join(f"  {v:<16} {f.__doc__.splitlines()[0]}" for v, f in VERBS.items()))
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage)
        return 0
    verb, overrides = argv[0], argv[1:]
    if verb in GROUPS and overrides and not overrides[0].startswith("-") and "=" not in overrides[0]:
        verb, overrides = f"{verb} {overrides[0]}", overrides[1:]
    if verb not in VERBS:
        print(f"error: unknown verb {verb!r}; valid choices: {', '.join(VERBS)}\n\n{usage}", file=sys.stderr)
        return 2
    try:
        if "--help" in overrides or "-h" in overrides:
            cfg = compose(verb, [o for o in overrides if o not in ("--help", "-h")])
            print(f"robalign {verb}: {VERBS[verb].__doc__}\n\n{OmegaConf.to_yaml(cfg)}")
            return 0
        VERBS[verb](compose(verb, overrides))
    except RobalignError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

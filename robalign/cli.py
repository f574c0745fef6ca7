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
    try:
        with initialize_config_module("robalign.configs", version_base="1.3"):
            cfg = hydra_compose(config_name=verb, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise RobalignError(_explain_hydra_error(verb, err)) from None
    OmegaConf.set_struct(cfg, True)
    return cfg


def _explain_hydra_error(verb: str, err: Exception) -> str:
    text = str(err).strip()
    if text.startswith("Could not override '"):
        key = text.split("'", 2)[1]
        return f"unknown setting {key!r} for `robalign {verb}`; valid settings: {', '.join(_settings(verb))}"
    if "Could not find 'env/" in text:
        import robalign.envs as envs

        name = text.split("Could not find 'env/", 1)[1].split("'", 1)[0]
        return f"unknown env {name!r}; valid choices: {', '.join(envs.available())}"
    return f"bad settings for `robalign {verb}`: {text}"


def _settings(verb: str) -> list[str]:
    """Every settable key of a verb's config, dotted (env.name, n, ...)."""
    from hydra import compose as hydra_compose, initialize_config_module

    with initialize_config_module("robalign.configs", version_base="1.3"):
        cfg = OmegaConf.to_container(hydra_compose(config_name=verb))

    def walk(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
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
    out = Path(cfg.output_dir or default_output_dir("demos"))
    with atomic_output_dir(out) as tmp:
        _save_config(cfg, tmp)
        recorded = record_demos(
            tmp, cfg.env.name, cfg.n, modes=modes, seed=cfg.seed, distractors=cfg.env.distractors,
            image_size=cfg.env.image_size, progress=cfg.progress,
        )
        shown: dict[str, int] = {}
        for traj in recorded:
            if shown.get(traj.mode, 0) < cfg.preview:
                shown[traj.mode] = shown.get(traj.mode, 0) + 1
                seed = traj.provenance["seed"]
                preview_episode(cfg.env.name, traj.mode, seed, tmp / "videos" / f"{traj.mode}-seed{seed}.mp4",
                                distractors=cfg.env.distractors)
        summary = {
            "env": cfg.env.name,
            "episodes": len(recorded),
            "frames": int(sum(len(t) for t in recorded)),
            "modes": {m: sum(t.mode == m for t in recorded) for m in modes},
            "seeds": [t.provenance["seed"] for t in recorded],
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {summary['episodes']} demos ({summary['frames']} frames) to {out}/dataset; previews in {out}/videos")
    return out


def run_envs(cfg: DictConfig) -> None:
    """List the tasks with their modes and objectives."""
    import robalign.envs as envs

    for name in envs.available():
        cls = envs.env_class(name)
        print(f"{name}\n  modes: {', '.join(cls.modes)}\n  objectives: {', '.join(envs.objectives_for(name))}")


VERBS: dict[str, Callable[[DictConfig], object]] = {"demos": run_demos, "envs": run_envs}


def _save_config(cfg: DictConfig, directory: Path) -> None:
    (directory / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = USAGE.format(verbs="\n".join(f"  {v:<10} {f.__doc__.splitlines()[0]}" for v, f in VERBS.items()))
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage)
        return 0
    verb, overrides = argv[0], argv[1:]
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

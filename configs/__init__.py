"""Hydra configs, one file per CLI verb, one group per swappable part (env/, ...).

Loaded from the installed package: `initialize_config_module("robalign.configs")`.
"""


def group_options(group: str) -> list[str]:
    """Names of the options of config group `group` (the yaml files in configs/GROUP/)."""
    from importlib.resources import files

    folder = files("robalign.configs") / group
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))

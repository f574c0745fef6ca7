"""Hydra configs, one file per CLI verb, one group per swappable part (env/, ...).

Loaded from the installed package: `initialize_config_module("robalign.configs")`.
"""

"""Command-line parsing shared by the recipes: `TrlParser` plus an error that lists the valid keys."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from trl import TrlParser


def parse_recipe_args(dataclass_types: Sequence[type], args: Sequence[str] | None = None, default_config=None):
    """Parse `--config <yaml>` and CLI overrides into `dataclass_types`.

    Without `--config`, `default_config` (if given) is used, so a recipe run with no arguments runs its default.
    Unknown keys in the YAML raise a `ValueError` that lists the valid keys.
    """
    args = list(sys.argv[1:] if args is None else args)
    if "--config" not in args and default_config is not None:
        args = ["--config", str(default_config), *args]
    parser = TrlParser(dataclass_types)
    if "--config" in args:
        value = args[args.index("--config") + 1:][:1]
        if not value or value[0].startswith("--"):
            raise ValueError("--config needs a value: the YAML file of the run, e.g. --config my_run.yaml")
        config_path = Path(value[0])
        if not config_path.is_file():
            raise FileNotFoundError(f"Config file not found: {config_path}")
        config = yaml.safe_load(config_path.read_text()) or {}
        if not isinstance(config, dict):
            raise ValueError(f"Config file {config_path} must hold a YAML mapping, got {type(config).__name__}")
        valid = sorted({action.dest for action in parser._actions if action.dest != "help"} | {"env"})
        unknown = sorted(set(config) - set(valid))
        if unknown:
            raise ValueError(f"Unknown key(s) {unknown} in {config_path}. Valid keys: {', '.join(valid)}")
    return parser.parse_args_and_config(args)

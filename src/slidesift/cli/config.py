"""Options from a TOML file: defaults for every command, overridden by flags.

A config file holds top-level keys, which apply to every command that has an option of that
name, and one table per command, which wins over the top level::

    # slidesift.toml
    longest = 1500          # -N for train, rails, sift, ...
    tile = 96

    [train]
    epochs = 20
    classes = "subtype"

    [segment]
    round-stride = true
    smooth = 25

Keys are option names with dashes or underscores (``round-stride`` or ``round_stride``).
Flags given on the command line always win. Unknown commands and options are errors that list
the valid names, so a typo never passes silently.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from slidesift.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["default_map", "read_config"]


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML config file.

    Raises
    ------
    ConfigError
        The file is missing or is not valid TOML (the message gives TOML's line and column).
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError("config", str(p), "an existing TOML file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", str(p), f"valid TOML ({exc})") from exc


def _params(command: click.Command) -> dict[str, str]:
    """Accepted key spellings -> parameter name, for one command's options and flags."""
    names: dict[str, str] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        names[param.name] = param.name
        names[param.name.replace("_", "-")] = param.name
        for opt in param.opts:
            if opt.startswith("--"):
                names[opt[2:]] = param.name
                names[opt[2:].replace("-", "_")] = param.name
    return names


def default_map(group: click.Group, config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Turn a parsed config into click's ``default_map`` for ``group``'s commands.

    Parameters
    ----------
    group
        The command group (``slidesift``).
    config
        Parsed TOML: top-level keys for every command that has them, tables per command.

    Returns
    -------
    dict
        ``command name -> {parameter name: default}``.

    Raises
    ------
    ConfigError
        A table names no command, a key names no option of its command, or a top-level key
        names no option of any command.
    """
    commands = group.commands
    accepted = {name: _params(cmd) for name, cmd in commands.items()}
    out: dict[str, dict[str, Any]] = {name: {} for name in commands}
    top = {k: v for k, v in config.items() if not isinstance(v, dict)}
    for key, value in top.items():
        users = [name for name, params in accepted.items() if key in params]
        if not users:
            known = sorted({k for params in accepted.values() for k in params if "_" not in k})
            raise ConfigError("config key", key, f"an option of some command: {', '.join(known)}")
        for name in users:
            out[name][accepted[name][key]] = value
    for section, table in config.items():
        if not isinstance(table, dict):
            continue
        if section not in commands:
            raise ConfigError("config table", f"[{section}]", f"a command: {', '.join(commands)}")
        for key, value in table.items():
            if key not in accepted[section]:
                valid = sorted(k for k in accepted[section] if "_" not in k)
                raise ConfigError(
                    f"key of [{section}]", key, f"an option of {section}: {', '.join(valid)}"
                )
            out[section][accepted[section][key]] = value
    return {name: values for name, values in out.items() if values}

"""Entry point: the ``slidesift`` command group and its error handling.

Exit codes (the table in :mod:`slidesift.errors`): 0 success; 1 other slidesift error; 2 bad
option, usage or missing input file; 3 unreadable slide; 4 bad annotation or manifest; 5
unusable training data; 6 unreadable checkpoint or rails; 7 missing extra; 8 unwritable output;
130 interrupted.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Iterator, MutableMapping
from typing import Any, TextIO

import click
from rich.markup import escape

from slidesift import __version__
from slidesift.cli.config import default_map, read_config
from slidesift.errors import SlidesiftError

_default_showwarning = warnings.showwarning

#: Command name -> ``module:attribute``. A command's module (and what it needs: torch for
#: ``train``, numba for ``phantom``) is imported only when that command runs, so
#: ``slidesift segment`` does not pay for the others.
COMMANDS: dict[str, str] = {
    "info": "slidesift.cli.info:info",
    "sift": "slidesift.cli.sift_cmd:sift_command",
    "rails": "slidesift.cli.rails_cmd:rails",
    "demo": "slidesift.cli.demo:demo",
    "phantom": "slidesift.cli.phantom_cmd:phantom",
    "subsets": "slidesift.cli.subsets_cmd:subsets",
    "train": "slidesift.cli.train_cmd:train_command",
    "segment": "slidesift.cli.segment_cmd:segment_command",
    "select": "slidesift.cli.select_cmd:select_command",
    "sweep": "slidesift.cli.sweep_cmd:sweep_command",
    "report": "slidesift.cli.report_cmd:report",
    "evaluate": "slidesift.cli.evaluate_cmd:evaluate_command",
    "thumb": "slidesift.cli.thumb_cmd:thumb_command",
    "doctor": "slidesift.cli.doctor_cmd:doctor",
    "export": "slidesift.cli.export_cmd:export_command",
}


class _LazyCommands(MutableMapping[str, click.Command]):
    """``Group.commands`` that imports a command's module on first access."""

    def __init__(self, targets: dict[str, str]) -> None:
        self._targets = dict(targets)
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            module, _, attr = self._targets[name].partition(":")
            self._loaded[name] = getattr(importlib.import_module(module), attr)
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._targets.setdefault(name, "")
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        self._targets.pop(name)
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)


class LazyGroup(click.Group):
    """A click group whose commands are imported when they are used (see :data:`COMMANDS`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _LazyCommands(COMMANDS)


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """``--config FILE``: defaults for every command from TOML (flags still win)."""
    if value:
        ctx.default_map = default_map(cli, read_config(value))


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="slidesift")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="SLIDESIFT_CONFIG",
    callback=_load_config,
    is_eager=True,
    expose_value=False,
    help="TOML file of option defaults: top-level keys for every command, [command] tables "
    "for one; flags win. Also $SLIDESIFT_CONFIG.",
)
def cli() -> None:
    """Find tumor in whole-slide images with entropy rails and a lightweight CNN.

    \b
    Start with the built-in example:
      slidesift demo
    Make a synthetic cohort with exact truth and a manifest (cohort/manifest.csv):
      slidesift phantom --out cohort --count 10
    Look at a slide, fit entropy rails on its tumor, sift another slide's tiles:
      slidesift info cohort/slides/paip_000.svs
      slidesift rails -s cohort/slides/paip_000.svs -t cohort/masks/paip_000_mask.tif \\
        -N 1500 -T 96 --out rails.json
      slidesift sift cohort/slides/paip_006.svs -N 1500 -T 96 --rails rails.json --out maps
    Train the lightweight CNN on a cohort (checkpoint per epoch: run/epoch_005.safetensors):
      slidesift train cohort/manifest.csv --out run -N 1500 -T 96 --epochs 5
    Score every epoch on the test slides, then segment and score them with one (Dask):
      slidesift select run cohort/manifest.csv --round-stride
      slidesift evaluate run/epoch_005.safetensors cohort/manifest.csv --split test --out seg
    One model per downsample N and tile side T, each scored (the paper's Table 2):
      slidesift sweep cohort/manifest.csv --N 1000,1500 --T 96,128 --epochs 2 --out sweep
    One HTML page with the scores, pictures and training curves (seg/report.html):
      slidesift report seg --run run
    The thumbnail to send instead of a slide (1-3 MB, its um/px inside), at the model's scale:
      slidesift thumb cohort/slides/paip_006.svs --model run/epoch_005.safetensors --out case.jpg
    Defaults from a TOML file, e.g. a [segment] table with smooth = 25 (flags win):
      slidesift --config slidesift.toml segment run/epoch_005.safetensors cohort/manifest.csv \\
        --split test --out seg_smooth
    What is installed:
      slidesift doctor
    """


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """slidesift's own warnings as ``warning: <advice>`` lines; others as Python shows them."""
    if category.__module__.startswith("slidesift"):
        from slidesift.cli.options import output_console

        output_console(stderr=True).print(f"[yellow]warning:[/] {escape(str(message))}")
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; turn slidesift errors into a one-paragraph message and an exit code."""
    with warnings.catch_warnings():  # restores Python's display when main returns
        warnings.showwarning = _show_warning
        return _run(argv)


def _run(argv: list[str] | None) -> int:
    from slidesift.cli.options import output_console

    err = output_console(stderr=True)
    try:
        cli.main(args=argv, prog_name="slidesift", standalone_mode=False)
    except SlidesiftError as exc:
        # escaped: messages hold brackets that are no markup (pip install 'slidesift[cohort]')
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (KeyboardInterrupt, click.exceptions.Abort):
        err.print("[yellow]interrupted[/]")
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

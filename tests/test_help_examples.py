"""Every command's ``--help`` teaches with examples that name real commands and options.

The examples are parsed, not run: each ``slidesift <command> ...`` line of an ``Example(s)``
block (a click ``\\b`` paragraph) goes through that command's own option parser, so a renamed
option, a missing required argument or a stray extra argument fails here. Running them is a
manual check (they need a phantom cohort and a trained run; see the report of the help audit).
"""

from __future__ import annotations

import inspect
import re
import shlex

import click
import pytest
from click.testing import CliRunner

from slidesift.cli.main import cli

COMMANDS = sorted(cli.commands)
#: click >= 8.3 marks a parameter the parser did not see with a sentinel; older click with None.
UNSET = getattr(click.core, "UNSET", None)
BACKTICKED = re.compile(r"`(slidesift(?: [^`]*)?)`")


def example_blocks(help_text: str, caption: str = "Example") -> list[list[str]]:
    """The ``\\b`` paragraphs of a help text whose first line starts with ``caption``."""
    blocks = []
    for paragraph in re.split(r"\n\s*\n", inspect.cleandoc(help_text)):
        lines = paragraph.splitlines()
        if len(lines) > 1 and lines[0].strip() == "\b" and lines[1].startswith(caption):
            blocks.append(lines[1:])
    return blocks


def example_lines(block: list[str]) -> list[str]:
    """The indented ``slidesift ...`` lines of a block, continuation lines (``\\``) joined.

    Unindented lines are captions and are skipped.
    """
    examples: list[str] = []
    pending: str | None = None
    for line in block:
        if pending is not None:
            pending += " " + line.strip()
        elif line[:1].isspace() and line.strip().startswith("slidesift"):
            pending = line.strip()
        else:
            continue
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
        else:
            examples.append(pending)
            pending = None
    assert pending is None, f"continuation line never ends: {pending!r}"
    return examples


def group_context() -> click.Context:
    return click.Context(cli, info_name="slidesift", **cli.context_settings)


def option_names(command: click.Command, ctx: click.Context) -> set[str]:
    names: set[str] = set()
    for param in command.get_params(ctx):
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def check_option_names(command: click.Command, ctx: click.Context, tokens: list[str]) -> None:
    """Every ``--name`` / ``-X`` token is an option of ``command``."""
    valid = option_names(command, ctx)
    for token in tokens:
        if token.startswith("-") and token != "-" and not re.fullmatch(r"-[\d.]+", token):
            opt = token.split("=", 1)[0]
            assert opt in valid, (
                f"`{ctx.command_path} {' '.join(tokens)}`: {opt} is no option of "
                f"{ctx.command_path}; valid: {', '.join(sorted(valid))}"
            )


def check_invocation(name: str, tokens: list[str]) -> None:
    """Parse ``slidesift <name> <tokens>`` as click would, without running it.

    Unknown options, an option without its value, a missing required argument or option, an
    extra argument and a value outside a choice or range all fail. Paths are not checked
    (the files are the user's).
    """
    command = cli.commands[name]
    ctx = click.Context(command, info_name=name, parent=group_context(), resilient_parsing=True)
    check_option_names(command, ctx, tokens)
    where = f"`slidesift {name} {' '.join(tokens)}`"
    opts, extra, _ = command.make_parser(ctx).parse_args(args=list(tokens))
    assert not extra, f"{where}: unexpected extra argument(s) {extra}"
    for param in command.get_params(ctx):
        value = opts.get(param.name) if param.name else None
        if value is UNSET or value == ():
            value = None
        if param.required:
            assert value is not None, f"{where}: missing {param.get_error_hint(ctx)}"
        if value is None or isinstance(param.type, (click.Path, click.File)):
            continue
        try:
            param.type_cast_value(ctx, value)
        except click.BadParameter as exc:
            pytest.fail(f"{where}: {param.get_error_hint(ctx)}: {exc.message}")


def split_group_invocation(tokens: list[str]) -> tuple[str | None, list[str]]:
    """``slidesift [group options] [command args]`` -> the command's name and its tokens.

    Group options are parsed (an unknown one fails); the name is None when none is given.
    """
    assert tokens[0] == "slidesift", tokens
    _, rest, _ = cli.make_parser(group_context()).parse_args(args=tokens[1:])
    if not rest:
        return None, []
    assert rest[0] in cli.commands, f"{' '.join(tokens)!r}: {rest[0]!r} is no command: {COMMANDS}"
    return rest[0], rest[1:]


def help_texts(command: click.Command) -> list[str]:
    """The command's own help and every option's help."""
    texts = [command.help or ""]
    texts += [p.help or "" for p in command.params if isinstance(p, click.Option)]
    return texts


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_examples_of_this_command_that_parse(name: str) -> None:
    command = cli.commands[name]
    blocks = example_blocks(command.help or "")
    assert blocks, f"`slidesift {name} --help` has no \\b 'Example(s):' block"
    examples = [line for block in blocks for line in example_lines(block)]
    assert examples, f"`slidesift {name} --help`: the Example block holds no example"
    for line in examples:
        assert line == f"slidesift {name}" or line.startswith(f"slidesift {name} "), (
            f"`slidesift {name} --help` example is of another command: {line!r}"
        )
        check_invocation(name, shlex.split(line)[2:])


@pytest.mark.parametrize("name", COMMANDS)
def test_rendered_help_keeps_example_lines_whole(name: str) -> None:
    """The ``\\b`` marker works: each example line is printed unwrapped."""
    result = CliRunner().invoke(cli, [name, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    printed = {line.strip() for line in result.output.splitlines()}
    for block in example_blocks(cli.commands[name].help or ""):
        for line in block:
            if line[:1].isspace():
                assert line.strip() in printed, f"wrapped or missing in --help: {line.strip()!r}"


def test_group_help_examples_parse() -> None:
    """``slidesift --help``: every line names a command and parses as that command."""
    blocks = example_blocks(cli.help or "", caption="")
    examples = [line for block in blocks for line in example_lines(block)]
    named = set()
    for line in examples:
        name, tokens = split_group_invocation(shlex.split(line))
        assert name is not None, f"{line!r} names no command"
        named.add(name)
        check_invocation(name, tokens)
    assert {"phantom", "train", "evaluate", "report"} <= named


@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_commands_quoted_in_prose_exist(name: str | None) -> None:
    """`slidesift <command> --option` in a caption or an option's help names real things."""
    command = cli if name is None else cli.commands[name]
    for text in help_texts(command):
        for quoted in BACKTICKED.findall(re.sub(r"\s+", " ", text)):
            tokens = [t for t in shlex.split(quoted) if t != "..."]
            sub_name, rest = split_group_invocation(tokens)
            if sub_name is not None:
                sub = cli.commands[sub_name]
                ctx = click.Context(sub, info_name=sub_name, parent=group_context())
                check_option_names(sub, ctx, rest)

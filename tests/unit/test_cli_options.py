"""Every option of every command takes any value, or says why in a located usage error (exit 2): never a
traceback. Values are checked where they enter (click types and callbacks), so this parses each command
line the way the tool does (click's make_context: types, callbacks, envvars) and runs nothing: no
command here may build, ship or contact anything."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import cli
from pipeline.errors import UserError


def commands(group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name in group.list_commands(ctx):
        sub = group.get_command(ctx, name)
        assert sub is not None
        if isinstance(sub, click.Group):
            yield from commands(sub, click.Context(sub, parent=ctx, info_name=name), (*prefix, name))
        else:
            yield (*prefix, name)


ROOT = click.Context(cli, info_name="pipeline")


def command_of(path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = cli
    ctx = ROOT
    for name in path:
        assert isinstance(cmd, click.Group)
        sub = cmd.get_command(ctx, name)
        assert sub is not None
        ctx, cmd = click.Context(sub, parent=ctx, info_name=name), sub
    return cmd


def every_option() -> list[tuple[tuple[str, ...], str]]:
    out = []
    for path in commands(cli, ROOT):
        for p in command_of(path).params:
            if isinstance(p, click.Option) and not p.is_flag and not p.count and p.name != "help":
                out.append((path, max(p.opts, key=len)))
    return out


EVERY_OPTION = every_option()
# argv holds no NUL byte (C strings); bytes that are not UTF-8 arrive as lone surrogates (surrogateescape).
hostile = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40),
    st.sampled_from(
        ["", "-1", "0", "65536", "²", "../../x", "/dev/zero", "a\nb", "${HOME}", "-x", "@failed", "é", "\udcff"]
    ),
    st.from_regex(r"[0-9]{1,25}", fullmatch=True),
)


def parse(path: tuple[str, ...], args: list[str]) -> None:
    cmd = command_of(path)
    needed = ["x" for p in cmd.params if isinstance(p, click.Argument) and p.required and p.nargs == 1]
    with cmd.make_context(path[-1], [*args, *needed]) as ctx:
        assert ctx is not None


def test_there_are_options_to_check() -> None:
    assert len(EVERY_OPTION) > 100, len(EVERY_OPTION)
    assert (("deploy",), "--expose") in EVERY_OPTION and (("store", "pull"), "--remote") in EVERY_OPTION


@pytest.mark.parametrize(("path", "option"), EVERY_OPTION, ids=[f"{' '.join(p)} {o}" for p, o in EVERY_OPTION])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=hostile)
def test_every_option_takes_any_value_or_says_why(path: tuple[str, ...], option: str, value: str) -> None:
    try:
        parse(path, [option, value])
    except click.ClickException as e:
        assert e.exit_code == 2 and e.format_message()
    except UserError as e:
        assert str(e)

"""The app behind a `warmline` command: built on demand, by the first command that needs it.

A plain click group (not Flask's FlaskGroup) so that `warmline --help`, `warmline flows …` and a mistyped command
never build the app: no database connection, no flows loaded, no log lines before the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import update_wrapper
from typing import Any, Protocol, TypeVar, cast

import click
from flask import Flask, current_app

from voice import create_app
from voice.bootstrap import Warmline
from voice.config import ConfigError, Settings, load_settings

__all__ = ["AppSource", "CommandApp", "one_shot_log_level", "warmline_parts", "with_app"]

F = TypeVar("F", bound=Callable[..., Any])


class AppSource(Protocol):
    """Whatever hands a command its app: :class:`CommandApp` when run from the shell; in tests, Flask's
    ``app.test_cli_runner()`` passes a ``flask.cli.ScriptInfo`` holding the test's app, which has the same method."""

    def load_app(self) -> Flask: ...


def one_shot_log_level(settings: Settings) -> str:
    """A one-shot command logs warnings and errors only (configured quieter: quieter still): its own output is the
    answer, and INFO lines such as "flow loaded" belong to the server's log (`warmline serve` keeps the level)."""
    level = max(logging.getLevelName(settings.log_level), logging.WARNING)
    return cast(str, logging.getLevelName(level))


class CommandApp:
    """The app of one command run, built the first time :meth:`load_app` is called and closed with the command."""

    def __init__(self) -> None:
        self._app: Flask | None = None

    def load_app(self) -> Flask:
        if self._app is None:
            try:
                level = one_shot_log_level(load_settings())
                # No flow watcher or housekeeping thread: `serve` runs the long-lived app in gunicorn workers.
                self._app = create_app({"log_level": level}, background=False)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.extensions["warmline"].close()
            self._app = None


def with_app(command: F) -> F:
    """Run the command inside the app's context (``current_app``), building the app first if need be."""

    @click.pass_context
    def run_in_app(ctx: click.Context, /, *args: Any, **kwargs: Any) -> Any:
        source = cast(AppSource, ctx.find_root().obj)
        with source.load_app().app_context():
            return ctx.invoke(command, *args, **kwargs)

    return cast(F, update_wrapper(run_in_app, command))


def warmline_parts(*, require_schema: bool = True) -> Warmline:
    """The app's parts; with ``require_schema``, first makes sure the database has been migrated, so that a new
    admin who runs a command before ``warmline db upgrade`` hears what to do instead of a SQL traceback."""
    warmline: Warmline = current_app.extensions["warmline"]
    if require_schema and not warmline.store.is_migrated():
        raise click.ClickException(
            f"the database {warmline.store.engine.url.render_as_string(hide_password=True)} is not set up for this "
            "version of Warmline: run `warmline db upgrade` first (`make run` does)"
        )
    return warmline

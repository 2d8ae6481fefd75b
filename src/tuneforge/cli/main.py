"""The ``tuneforge`` command: one table maps command names to plain functions.

Each command lives in its own small module of this package, parses its
arguments with typer, calls one public function of the Python API and
prints. Modules import torch & co. inside the function, so ``--help`` is fast.
"""

from __future__ import annotations

import importlib
import logging
import sys

from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from tuneforge.cli.options import key_env_option, key_file_option, passphrase_env_option
from tuneforge.errors import TuneforgeError

# name -> "module:function" (or "module:typer_app" for a command group). The one list of commands (add a line for a new one).
COMMANDS: dict[str, str] = {
    "train": "tuneforge.cli.train:train",
    "validate": "tuneforge.cli.validate:validate",
    "generate": "tuneforge.cli.generate:generate",
    "chat": "tuneforge.cli.generate:chat",
    "eval": "tuneforge.cli.eval:evaluate",
    "report": "tuneforge.cli.report:report",
    "compare": "tuneforge.cli.compare:compare",
    "score": "tuneforge.cli.score:score",
    "serve": "tuneforge.cli.serve:serve",
    "keys": "tuneforge.cli.keys:app",
    "merge": "tuneforge.cli.merge:merge",
    "prune": "tuneforge.cli.prune:prune",
    "export": "tuneforge.cli.export:export",
    "audit": "tuneforge.cli.audit:app",
    "lm-eval": "tuneforge.cli.lm_eval:lm_eval",
    "ui": "tuneforge.cli.ui:ui",
    "tune": "tuneforge.cli.tune:tune",
    "genkey": "tuneforge.cli.encrypt:genkey",
    "encrypt": "tuneforge.cli.encrypt:encrypt",
    "decrypt": "tuneforge.cli.encrypt:decrypt",
    "rekey": "tuneforge.cli.rekey:rekey",
}


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="tuneforge", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
        help="Fine-tune LLMs end to end: data, training, evaluation, export and serving from one config.",
    )
    app.callback()(_global_options)
    for name, target in COMMANDS.items():
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        if isinstance(command, typer.Typer):  # a command group such as `tuneforge keys create|list|revoke`
            app.add_typer(command, name=name)
        else:
            app.command(name)(command)
    return app


def _global_options(
    key_file: Optional[str] = key_file_option(),
    key_env: Optional[str] = key_env_option(),
    passphrase_env: Optional[str] = passphrase_env_option(),
) -> None:
    """Fine-tune LLMs end to end: data, training, evaluation, export and serving from one config.

    The key options, given before the command (`tuneforge --key-file K serve RUN`), name the key of
    every encrypted run the command reads, before the source the run's config names.
    """
    from tuneforge.security.key_source import KeySource, give

    give(KeySource(key_file, key_env, passphrase_env))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI in-process; returns the exit code (tests call this directly)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = Console(stderr=True)
    from tuneforge.security.key_source import give

    try:
        result = build_app()(args=argv if argv is not None else sys.argv[1:], standalone_mode=False)
    except TuneforgeError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)  # one line, not wrapped at 80
        return 2
    except (typer.Abort, KeyboardInterrupt):
        console.print("aborted")
        return 130
    except typer.TyperException as exc:
        # typer vendors click (typer._click), so usage errors such as "No such command 'trian'.
        # Did you mean 'train'?" are not click.ClickException: catch typer's base class.
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            console.print(f"[bold red]error:[/] {escape(exc.format_message())}", highlight=False)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    finally:
        give(None)  # in-process callers (tests) run one command per call
    return result if isinstance(result, int) else 0


def run() -> None:
    sys.exit(main())

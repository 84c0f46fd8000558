"""Command-line entry points: the `mnist` group and its commands, each also installed as
mnist-train, -eval, -predict, -export, -sweep, -launch and -serve.

This layer turns arguments into calls and results into output. A user's mistake (any
UserError, or a usage error) ends as one line on stderr and exit status 2; `--debug`
shows the traceback instead. MXNet is imported only once a command runs, so `--help`
answers at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from typing import NoReturn

import click

from ..errors import Diverged, Interrupted, Stopped, UserError
from ..training.cluster import ROLE
from .checkpoints import eval_command, export_command, predict_command, serve_command
from .options import CONTEXT, version
from .training import launch_command, sweep_command, train_command

USAGE_ERROR = 2


def run(command: click.Command, argv: list[str] | None = None) -> int:
    """Run a click command; map user mistakes to one stderr line and exit status 2. With
    --debug (kept in the context's meta by its callback), errors raise with their traceback."""
    args = sys.argv[1:] if argv is None else argv
    prog = command.name
    ctx = None

    def debug() -> bool:
        return ctx is not None and ctx.meta.get("debug", False)

    target = command.commands.get(args[0]) if isinstance(command, click.Group) and args else command
    stops_at_once = target in STOP_AT_ONCE
    if stops_at_once:
        previous = signal.signal(signal.SIGTERM, stopped_by_sigterm(prog))
    try:
        ctx = command.make_context(prog, list(args))
        with ctx:
            result = command.invoke(ctx)
    except click.exceptions.Exit as done:  # --help, --version
        return done.exit_code
    except Interrupted as interruption:
        click.echo(f"{prog}: {interruption}", err=True)
        return 130
    except Stopped as stop:
        click.echo(f"{prog}: {stop}", err=True)
        return stop.exit_status
    except Diverged as error:
        if debug():
            raise
        click.echo(f"{prog}: error: {error}", err=True)
        return 1
    except (click.Abort, KeyboardInterrupt, EOFError):
        click.echo(f"{prog}: interrupted", err=True)
        return 130
    except click.ClickException as error:
        if debug():
            raise
        click.echo(f"{prog}: error: {error.format_message()} (see {prog} --help)", err=True)
        return USAGE_ERROR
    except UserError as error:
        if debug():
            raise
        click.echo(f"{prog}: error: {error}", err=True)
        return USAGE_ERROR
    finally:
        if stops_at_once:
            signal.signal(signal.SIGTERM, previous)
    return result if isinstance(result, int) else 0


# The commands SIGTERM stops at once; mnist-train and mnist-sweep stop at a checkpoint, and
# mnist-serve and mnist-launch drain, each with handlers of their own.
STOP_AT_ONCE = (eval_command, predict_command, export_command)


def stopped_by_sigterm(prog: str):
    """SIGTERM's handler for the commands of STOP_AT_ONCE: what the command was writing
    under a temporary name (an export's staging folder, a picture) is taken away, one line
    says so, and the process ends with 143. Raising from the handler instead could land inside
    MXNet's own code, which turns exceptions into others."""
    def handler(signum, frame) -> None:
        from ..files import remove_half_made

        remove_half_made()
        click.echo(f"{prog}: stopped by SIGTERM; nothing half-written was kept", err=True)
        finish(128 + signum)

    return handler


def finish(status: int) -> NoReturn:
    """End the process with `status` as soon as its output is out. Everything a command writes
    is closed and synced by then; the interpreter's teardown (MXNet's engine, every module's
    objects) would take another 0.1-0.5 s and do nothing a user needs, except in a worker of
    a distributed run: without it, the servers wait 30 s for the worker to say goodbye."""
    if os.environ.get(ROLE):  # a ps-lite worker: MXNet's exit tells the cluster it is done
        sys.exit(status)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, a closed stream
            stream.flush()
    logging.shutdown()
    os._exit(status)


def train_main() -> None:
    finish(run(train_command))


def eval_main() -> None:
    finish(run(eval_command))


def predict_main() -> None:
    finish(run(predict_command))


def export_main() -> None:
    finish(run(export_command))


def sweep_main() -> None:
    finish(run(sweep_command))


def launch_main() -> None:
    finish(run(launch_command))


def serve_main() -> None:
    finish(run(serve_command))


@click.group("mnist", context_settings=CONTEXT)
@version
def mnist_group():
    """Train the MNIST MLP with MXNet Gluon, and evaluate, predict with, export, sweep,
    launch and serve it. Each command is also installed as mnist-COMMAND."""


for _name, _command in (("train", train_command), ("eval", eval_command),
                        ("predict", predict_command), ("export", export_command),
                        ("sweep", sweep_command), ("launch", launch_command),
                        ("serve", serve_command)):
    mnist_group.add_command(_command, _name)


def main() -> None:
    finish(run(mnist_group))


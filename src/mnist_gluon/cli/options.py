"""What the commands share: click's settings, and the options several of them take, declared
once."""

from __future__ import annotations

import click

from .. import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
version = click.version_option(__version__, message="%(prog)s %(version)s")



def remember_debug(ctx: click.Context, param, value: bool) -> bool:
    if value:
        ctx.meta["debug"] = True  # meta is shared by every context of one command line
    return value


def parse_normalize(ctx, param, text: str | None):
    from ..inference.classifier import checked_normalization

    if text is None:
        return None
    return checked_normalization(text.split(","), "--normalize")


def check_device(ctx, param, device: str) -> str:
    from ..device import parse_device

    parse_device(device)
    return device


# Options that several commands share, declared once.
debug_option = click.option("--debug", is_flag=True, expose_value=False, callback=remember_debug,
                            help="Show Python tracebacks of errors.")
checkpoint_option = click.option(
    "--checkpoint", "checkpoint_option", type=click.Path(), metavar="PATH",
    help="The checkpoint, if not given as the first argument: a .params file from mnist-train "
         "(or a plain Gluon script's), a run folder (its best.params), or mnist-export's "
         "folder.")
checkpoint_argument = click.argument("checkpoint_argument", metavar="[CHECKPOINT]",
                                     required=False, type=click.Path())


def the_checkpoint(option: str | None, argument: str | None) -> str:
    """The checkpoint, given once: as the first argument or with --checkpoint."""
    if option is not None and argument is not None:
        raise click.UsageError(f"the checkpoint is given twice ({argument} and --checkpoint "
                               f"{option}); give it once")
    if option is None and argument is None:
        raise click.UsageError("give the checkpoint as the first argument, e.g. runs/base "
                               "(its best.params), or with --checkpoint PATH")
    return option if option is not None else argument
normalize_option = click.option(
    "--normalize", "bare_normalization", default=None, metavar="MEAN,STD",
    callback=parse_normalize,
    help="For a bare .params file without sidecar: the normalisation its script used on pixels "
         "scaled to [0, 1] (0,1 for ToTensor alone).  [default: 0.1307,0.3081]")


def device_option():
    """--device, the same in every command that runs a model."""
    return click.option("--device", default="auto", show_default=True, callback=check_device,
                        help="auto (GPU 0 when MXNet sees one, else the CPU), cpu, gpu or "
                             "gpu:N.")


def data_root_option(help: str):
    return click.option("--data-root", type=click.Path(), default=None, help=help)


def config_help(what: str) -> str:
    from ..config import bundled_configs

    return (f"{what}: a YAML file, or the name of a config that ships with mnist-gluon "
            f"({', '.join(bundled_configs())}).")

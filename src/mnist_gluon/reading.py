"""Reading what a user hands over, at a cost bounded by what it promises: regular files only
(a FIFO would hang the read, /dev/zero never end it), up to a stated size; YAML that cannot
stand for more values than a stated limit; downloads up to a size and a time in all; values
shown in messages cut short; a config's values checked against the types they declare."""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import reprlib
import stat
import time
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, UserError

# An alias repeats its anchor's whole value, so a short YAML text can stand for billions of
# values; ours are 4 levels deep and a few hundred values.
MAX_DEPTH = 32
MAX_VALUES = 100_000
MAX_SIDECAR_BYTES = 1 << 20  # a checkpoint's .json; ours are about 4 KB
# One file from one mirror, start to end (MNIST's largest is 9.9 MB); the environment's
# MNIST_GLUON_DOWNLOAD_SECONDS overrides it, for a slow line.
DOWNLOAD_SECONDS = 600.0

KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
         (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def not_regular(mode: int) -> str | None:
    """What a file of `mode` is when it is not a regular file ("a FIFO"), else None."""
    return next((kind for test, kind in KINDS if test(mode)), None)


def check_regular(path: Path, error: type[UserError], what: str = "") -> os.stat_result:
    """Refuse, as one `error` line naming `what` (a "checkpoint") and `path`, what reading
    would hang on (a FIFO), never finish (a device) or cannot read (a folder, nothing there)."""
    name = f"{what} {path}" if what else str(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        problem = "is a symbolic link to nothing" if path.is_symlink() else "does not exist"
        raise error(f"{name} {problem}") from None
    except OSError as failure:  # a loop of symbolic links, a permission
        raise error(f"{name} cannot be read: {failure.strerror}") from None
    if (kind := not_regular(info.st_mode)) is not None:
        raise error(f"{name} is {kind}, not a file")
    return info


def read_json(path: Path, limit: int, error: type[UserError], what: str, remedy: str) -> Any:
    """The JSON value in the regular file `path` (read_regular's bounds); one `error` line
    ending with `remedy` for anything that is not readable JSON."""
    import json

    try:
        return json.loads(read_regular(path, limit, error, what))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as failure:
        raise error(f"{what} {path} is not readable JSON ({failure}); {remedy}") from None


def read_regular(path: Path, limit: int, error: type[UserError], what: str) -> bytes:
    """The bytes of the regular file `path`, refused in one `error` line if it is something
    else or larger than `limit` bytes. Opened without blocking, so a FIFO cannot hang it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as failure:
        check_regular(path, error, what)  # says what is wrong, if it can
        raise error(f"{what} {path} cannot be read: {failure.strerror}") from None
    info = os.fstat(fd)
    if (kind := not_regular(info.st_mode)) is not None:
        os.close(fd)
        raise error(f"{what} {path} is {kind}, not a file")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > limit:
            raise error(f"{what} {path} is {info.st_size:,} bytes, more than the {limit:,} "
                        "bytes this command reads")
        content = handle.read(limit + 1)
    if len(content) > limit:  # it grew while being read
        raise error(f"{what} {path} is more than the {limit:,} bytes this command reads")
    return content


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a document nested more than MAX_DEPTH deep or standing
    for more than MAX_VALUES values once its aliases are expanded. Both are counted while the
    document is composed, before any Python value is built, in time linear in the text."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0
        self.sizes: dict[int, int] = {}  # id(node) -> the values it stands for

    def compose_node(self, parent, index):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ConfigError(f"is nested more than {MAX_DEPTH} levels deep")
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = []
        size = 1 + sum(self.sizes.get(id(child), 1) for child in children)
        if size > MAX_VALUES:
            raise ConfigError(f"stands for more than {MAX_VALUES:,} values once its aliases "
                              "are expanded")
        self.sizes[id(node)] = size
        return node


def read_yaml_mapping(path: Path, limit: int, what: str) -> dict[str, Any]:
    """The mapping in the YAML file at `path` ({} for an empty one), read as `what`."""
    raw = read_regular(path, limit, ConfigError, what)
    try:
        text = raw.decode("utf-8-sig")  # whatever the locale; a BOM is skipped
    except UnicodeDecodeError as error:
        raise ConfigError(f"{what} {path} cannot be read ({error}); pass a YAML file"
                          ) from None
    loaded = parse_yaml(text, f"{what} {path}")
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of keys to values, not a "
                          f"{type(loaded).__name__}")
    return loaded


def parse_yaml(text: str, what: str, plain: bool = False) -> Any:
    """`text` as YAML, bounded (BoundedLoader); any problem is a ConfigError naming `what`.
    With `plain`, text that is not YAML (`a: b:`) is that string."""
    try:
        loader = BoundedLoader(text)  # its reader refuses a control character at once
    except yaml.reader.ReaderError as error:
        if plain:
            return text
        character = chr(error.character) if isinstance(error.character, int) else (
            error.character)
        raise ConfigError(f"{what} is not valid YAML: it holds the control character "
                          f"{character!r} at character {error.position + 1}; remove it"
                          ) from None
    try:
        return loader.get_single_data()
    except ConfigError as error:
        raise ConfigError(f"{what} {error}; write the values out plainly") from None
    except yaml.YAMLError as error:
        if plain:
            return text
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        if "\\t" in problem or "\t" in problem:
            problem += " (indent with spaces, not tabs)"
        raise ConfigError(f"{what} is not valid YAML{line}: {problem}") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        problem = ("a number of more than 4,300 digits" if "digits" in str(error)
                   else f"a value that cannot be converted ({str(error)[:80]})")
        raise ConfigError(f"{what} holds {problem}; write plain values") from None
    finally:
        loader.dispose()


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlong = 24
_SHORT.maxlevel = 2


def shown(value: Any) -> str:
    """`repr(value)`, cut short: a message must stay one line whatever the value."""
    return _SHORT.repr(value)


def fetch(url: str, timeout: float, limit: int, deadline: float | None = None) -> bytes:
    """The body at `url`, read a chunk at a time: refused past `limit` bytes (a mirror that
    streams forever) or `deadline` seconds in all (one that sends a byte now and then; the
    `timeout` bounds each wait). OSError says which."""
    import urllib.request  # only when downloading: it is slow to import

    if deadline is None:
        deadline = download_seconds()
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise OSError(f"it offers {int(declared):,} bytes, more than the {limit:,} a file "
                          "here may have")
        body = bytearray()
        while chunk := response.read1(1 << 16):
            body += chunk
            if len(body) > limit:
                raise OSError(f"it sent more than the {limit:,} bytes a file here may have")
            if time.monotonic() - started > deadline:
                raise OSError(f"it sent {len(body):,} bytes in {deadline:.0f} s and was still "
                              "sending")
    return bytes(body)


def download_seconds() -> float:
    text = os.environ.get("MNIST_GLUON_DOWNLOAD_SECONDS", "")
    try:
        seconds = float(text) if text else DOWNLOAD_SECONDS
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise ConfigError(f"MNIST_GLUON_DOWNLOAD_SECONDS={text!r} is not a number of seconds; "
                          "set it to one above 0, or unset it")
    return seconds


FLOAT32_MAX = 3.4028234663852886e38  # what MXNet's float32 parameters can hold
FLOAT32_TINY = 1.1754943508222875e-38  # float32's smallest normal number


def float32_number(key: str, value: Any) -> float:
    """`value` as a number MXNet takes as float32 (finite, in range, and not so small that
    float32 makes it 0 or a subnormal, which MXNet's parser refuses), or a ConfigError."""
    number = math.nan
    if isinstance(value, int) and not isinstance(value, bool):
        number = float(value) if abs(value) < 2**1000 else FLOAT32_MAX * 2
    elif isinstance(value, (float, str)):  # YAML 1.1 reads 1e-3 (no dot) as a string
        with contextlib.suppress(ValueError):
            number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{key} must be a finite number, got {shown(value)}")
    if abs(number) > FLOAT32_MAX:
        raise ConfigError(f"{key} is {number:g}; MXNet computes in float32, which "
                          f"holds numbers up to {FLOAT32_MAX:.4g}")
    if 0 < abs(number) < FLOAT32_TINY:
        raise ConfigError(f"{key} is {number!r}; MXNet computes in float32, whose smallest "
                          f"normal number is {FLOAT32_TINY:.4g}: use 0 or a larger value")
    return number


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Return `value` as type `hint`, or raise a ConfigError naming the key and the type."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None and type(None) in args:
            return None
        if set(args) == {int, str}:  # a count, or a word (checked by `validate`)
            if isinstance(value, str) or isinstance(value, int) and not isinstance(value, bool):
                return value
            raise ConfigError(f"{key} must be a number or a word, got {shown(value)}")
        (inner,) = [arg for arg in args if arg is not type(None)]
        return coerce(key, value, inner)
    if typing.get_origin(hint) is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {shown(value)}")
        return [coerce(f"{key}[{i}]", item, args[0]) for i, item in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {shown(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value  # each integer's range is checked by `validate`
        raise ConfigError(f"{key} must be an integer, got {shown(value)}")
    if hint is float:
        return float32_number(key, value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {shown(value)}")
    raise TypeError(f"unsupported config type {hint} for {key}")


# Names other tools use for our keys: a user coming from them gets pointed at ours.
SYNONYMS = {"learning_rate": "lr", "wd": "weight_decay", "num_epochs": "epochs",
            "batch": "batch_size", "hidden_size": "hidden", "hidden_units": "hidden",
            "num_classes": "classes", "dataset": "name", "lr_scheduler": "lr_schedule",
            "clip_grad": "clip_gradient", "ctx": "device"}


def unknown_key_message(key: str, known: list[str]) -> str:
    section, _, leaf = key.rpartition(".")
    ours = SYNONYMS.get(leaf)
    synonym = f"{section}.{ours}" if section else ours
    if ours and synonym in known:
        return f"unknown config key {key}; did you mean {synonym}?"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(known)}"
    return f"unknown config key {key}; {hint}"

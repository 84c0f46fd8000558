"""MkDocs hooks (mkdocs.yml): the config reference, generated from mnist_gluon.config, so that
a key cannot go undocumented and nothing is written twice. Each key's type and default come
from its dataclass field, what it may be from the ranges and choices the config checks, and
what it does from the comment beside the field (or the comment lines just above it)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import tokenize
import types
import typing

MARKER = "<!-- config-reference -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, config_reference())
    return markdown


def field_comments(cls: type) -> dict[str, str]:
    """Each field's comment in the class's source: the one on its line, after the comments on
    the lines just above it."""
    source = inspect.getsource(cls)
    comments: dict[int, str] = {}
    whole_line: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row = token.start[0]
            comments[row] = token.string.lstrip("#").strip()
            if not token.line[: token.start[1]].strip():
                whole_line.add(row)
    found = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above, row = [], node.lineno - 1
            while row in whole_line:
                above.insert(0, comments[row])
                row -= 1
            trailing = [comments[node.lineno]] if node.lineno in comments else []
            found[node.target.id] = " ".join(above + trailing)
    return found


def type_name(hint) -> str:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return " or ".join("null" if arg is type(None) else type_name(arg)
                           for arg in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"list of {type_name(typing.get_args(hint)[0])}"
    return {bool: "true or false", int: "integer", float: "number", str: "string"}.get(
        hint, str(hint))


def shown(value) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def rows(cls: type, prefix: str = "") -> list[tuple[str, str, str, str, str, str]]:
    """(key, type, default, allowed, what it does, section) for every key under `cls`."""
    from mnist_gluon import config

    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    ranges = {key: allowed for key, _, allowed in config.RANGES}
    found = []
    for item in dataclasses.fields(cls):
        key, hint = f"{prefix}{item.name}", hints[item.name]
        if dataclasses.is_dataclass(hint):
            found += rows(hint, f"{key}.")
            continue
        default = (item.default_factory() if item.default_factory is not dataclasses.MISSING
                   else item.default)
        allowed = (", ".join(config.CHOICES[key]) if key in config.CHOICES else
                   ranges.get(key) or config.RULES.get(key, ""))
        found.append((key, type_name(hint), shown(default), allowed,
                      comments.get(item.name, ""), prefix.rstrip(".")))
    return found


def config_reference() -> str:
    """Markdown: one table per section, each key with its type, default, allowed values and
    meaning."""
    from mnist_gluon import config

    sections: dict[str, list] = {}
    for row in rows(config.Config):
        sections.setdefault(row[5], []).append(row)
    out = []
    for section, section_rows in sections.items():
        cls = section_class(section)
        title = f"`{section}`" if section else "The top level"
        out += [f"### {title}", ""]
        if cls is not None and cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
            out += [" ".join(cls.__doc__.split()), ""]
        out += ["| key | type | default | allowed | what it does |", "|---|---|---|---|---|"]
        for key, kind, default, allowed, meaning, _ in section_rows:
            cell = lambda text: text.replace("|", "\\|")  # noqa: E731
            out.append(f"| `{key}` | {kind} | `{cell(default)}` | {cell(allowed)} | "
                       f"{cell(meaning)} |")
        out.append("")
    return "\n".join(out)


def section_class(section: str) -> type | None:
    from mnist_gluon import config

    cls = config.Config
    for part in section.split(".") if section else []:
        cls = typing.get_type_hints(cls)[part]
    return cls

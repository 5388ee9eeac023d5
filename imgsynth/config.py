"""Typed configuration: pydantic v2 models loaded from YAML with dotted overrides.

A YAML config names its ``kind`` (which stage schema validates it) and lists only what differs
from the schema's defaults; ``base: NAME`` starts from another config. Built-in configs live in
the top-level ``configs/`` folder, installed as the package data ``imgsynth.configs``, and are
addressable by name (``ldm_2d_tiny``) or by path. Unknown or misspelt keys are errors that
name the key, the file and the closest valid key.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.resources
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from imgsynth.errors import ConfigError

C = TypeVar("C", bound="ConfigBase")


class ConfigBase(BaseModel):
    """Base of every config section: unknown keys are rejected, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


_KINDS: dict[str, type[ConfigBase]] = {}


def register_config(kind: str) -> Callable[[type[C]], type[C]]:
    """Class decorator: make ``cls`` the schema for YAML files with ``kind: <kind>``."""

    def deco(cls: type[C]) -> type[C]:
        if kind in _KINDS and _KINDS[kind] is not cls:
            raise RuntimeError(f"config kind {kind!r} registered twice")
        _KINDS[kind] = cls
        return cls

    return deco


def config_kinds() -> dict[str, type[ConfigBase]]:
    """All registered config schemas, importing each stage's (light) config module once."""
    import imgsynth.stage_configs  # noqa: F401  (registers every stage's schema)

    return dict(_KINDS)


# ---------------------------------------------------------------------------------------------
# Locating and reading YAML
# ---------------------------------------------------------------------------------------------
def builtin_config_dir() -> Path:
    """Folder holding the built-in YAML configs (installed package data or the source tree)."""
    try:
        root = importlib.resources.files("imgsynth.configs")
        path = Path(str(root))
        if path.is_dir() and any(path.glob("*.yaml")):
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[1] / "configs"


def builtin_config_names() -> list[str]:
    return sorted(p.stem for p in builtin_config_dir().glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path to an existing YAML file, or the name of a built-in config."""
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if candidate.is_file():
        return candidate
    if candidate.suffix in {".yaml", ".yml"} or "/" in text:
        raise ConfigError(f"config file not found: {text}")
    builtin = builtin_config_dir() / f"{text}.yaml"
    if builtin.is_file():
        return builtin
    names = builtin_config_names()
    close = difflib.get_close_matches(text, names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; built-in configs: {', '.join(names) or 'none'}"
    raise ConfigError(f"unknown config '{text}' (not a file, not a built-in name){hint}")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"invalid YAML{where}: {getattr(exc, 'problem', exc)}", path=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", path=path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not a UTF-8 text file (byte {exc.start}); save the config as UTF-8 YAML", path=path) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("a config must be a YAML mapping at top level", path=path)
    return data


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``top`` onto ``base``: mappings merge recursively, everything else is replaced."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _load_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path.resolve() in seen:
        raise ConfigError("'base' chain loops back to this file", path=path)
    data = _read_yaml(path)
    base_name = data.pop("base", None)
    if base_name is None:
        return data
    if not isinstance(base_name, str):
        raise ConfigError("'base' must name a config (built-in name or path)", path=path)
    base_path = (path.parent / base_name) if base_name.endswith((".yaml", ".yml")) else None
    base_file = base_path if base_path is not None and base_path.is_file() else resolve_config_path(base_name)
    return deep_merge(_load_raw(base_file, (*seen, path.resolve())), data)


# ---------------------------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------------------------
def parse_override(text: str) -> tuple[list[str], Any]:
    """``'a.b=3'`` -> (['a', 'b'], 3); the value is parsed as YAML (numbers, bools, lists)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    out = json.loads(json.dumps(data, default=str))
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for key in keys[:-1]:
            nxt = node.get(key)
            if not isinstance(nxt, dict):
                nxt = {}
                node[key] = nxt
            node = nxt
        node[keys[-1]] = value
    return out


# ---------------------------------------------------------------------------------------------
# Validation with useful messages
# ---------------------------------------------------------------------------------------------
def _model_classes(annotation: Any) -> list[type[BaseModel]]:
    """BaseModel classes reachable from a field annotation (Optional, Union, list, dict)."""
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_classes(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple, dict, Mapping):
        for arg in typing.get_args(annotation):
            found.extend(_model_classes(arg))
    return found


def _is_union_tag(cls: type[BaseModel], part: str) -> bool:
    """True when ``part`` is the tag of ``cls`` in a discriminated union (a Literal field's value)."""
    return any(typing.get_origin(f.annotation) is typing.Literal and f.default == part for f in cls.model_fields.values())


def _walk(schema: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[type[BaseModel]], tuple[Any, ...]]:
    """Schema classes reachable at ``loc``, and ``loc`` without discriminated-union tags
    (pydantic reports ``model.stylegan2.key`` for the key ``model.key`` of the ``stylegan2`` member)."""
    classes: list[type[BaseModel]] = [schema]
    clean: list[Any] = []
    for part in loc:
        if isinstance(part, str):
            if not any(part in cls.model_fields for cls in classes):
                tagged = [cls for cls in classes if _is_union_tag(cls, part)]
                if tagged:
                    classes = tagged
                    continue
            nxt: list[type[BaseModel]] = []
            for cls in classes:
                field = cls.model_fields.get(part)
                if field is not None:
                    nxt.extend(_model_classes(field.annotation))
            if nxt:
                classes = nxt
        clean.append(part)
    return classes, tuple(clean)


def valid_keys_at(schema: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names valid at ``loc`` (the location of an offending key, without that key)."""
    keys: list[str] = []
    for cls in _walk(schema, loc)[0]:
        keys.extend(k for k in cls.model_fields if k not in keys)
    return keys


def _error_key(err: Mapping[str, Any], schema: type[BaseModel]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(location with union tags, location of real keys) of one pydantic error."""
    loc = tuple(err.get("loc", ()))
    # pydantic puts union member / tagged-union names into loc; keep only real keys and indices.
    field_loc = tuple(p for p in loc if isinstance(p, int) or not str(p).startswith(("function-", "tagged-")))
    return field_loc, _walk(schema, field_loc)[1]


def _format_error(err: Mapping[str, Any], schema: type[BaseModel]) -> str:
    tag_loc, field_loc = _error_key(err, schema)
    dotted = ".".join(str(p) for p in field_loc) or "<root>"
    if err.get("type") == "extra_forbidden":
        key = str(field_loc[-1]) if field_loc else dotted
        valid = valid_keys_at(schema, tag_loc[:-1])
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        prefix = ".".join(str(p) for p in field_loc[:-1])
        suggestion = f"{prefix + '.' if prefix else ''}{close[0]}" if close else None
        hint = f"; did you mean '{suggestion}'?" if suggestion else f"; valid keys here: {', '.join(valid)}"
        return f"unknown key '{dotted}'{hint}"
    return f"'{dotted}': {err.get('msg', 'invalid value')} (got {err.get('input')!r})"


def validate_config(
    schema: type[C], data: Mapping[str, Any], *, source: str | Path | None = None, overrides: Iterable[str] = (),
) -> C:
    """``data`` as a ``schema`` config; a ConfigError names ``source``, or the ``--set`` override
    (of ``overrides``) that set the offending key."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = _format_error(errors[0], schema)
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        dotted = ".".join(str(p) for p in _error_key(errors[0], schema)[1])
        for text in overrides:
            key = ".".join(parse_override(text)[0])
            if dotted and (key == dotted or key.startswith(dotted + ".") or dotted.startswith(key + ".")):
                source = f"--set {text}"
                break
        raise ConfigError(first + more, path=source) from None


def load_config(
    name_or_path: str | Path,
    overrides: Iterable[str] = (),
    *,
    expect_kind: str | Iterable[str] | None = None,
) -> ConfigBase:
    """Load a built-in or user YAML config, apply ``--set`` overrides, validate its schema."""
    path = resolve_config_path(name_or_path)
    overrides = list(overrides)
    data = apply_overrides(_load_raw(path), overrides)
    kind = data.pop("kind", None)
    kinds = config_kinds()
    if kind is None:
        raise ConfigError(f"missing 'kind' (one of: {', '.join(sorted(kinds))})", path=path)
    if kind not in kinds:
        close = difflib.get_close_matches(str(kind), list(kinds), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; valid kinds: {', '.join(sorted(kinds))}"
        raise ConfigError(f"unknown kind '{kind}'{hint}", path=path)
    if expect_kind is not None:
        wanted = {expect_kind} if isinstance(expect_kind, str) else set(expect_kind)
        if kind not in wanted:
            raise ConfigError(f"config is of kind '{kind}', this command needs {' or '.join(sorted(wanted))}", path=path)
    return validate_config(kinds[kind], data, source=path, overrides=list(overrides))


def config_kind(config: ConfigBase) -> str:
    for kind, cls in config_kinds().items():
        if type(config) is cls:
            return kind
    raise ConfigError(f"{type(config).__name__} is not a registered config kind")


def config_to_dict(config: ConfigBase) -> dict[str, Any]:
    """The fully resolved config as plain data, with its ``kind`` first."""
    return {"kind": config_kind(config), **config.model_dump(mode="json")}


def config_to_yaml(config: ConfigBase) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=None)


def config_hash(config: ConfigBase) -> str:
    blob = json.dumps(config_to_dict(config), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def config_from_dict(data: Mapping[str, Any], *, source: str | Path | None = None) -> ConfigBase:
    """Rebuild a config saved with :func:`config_to_dict` (e.g. from a run folder)."""
    data = dict(data)
    kind = data.pop("kind", None)
    kinds = config_kinds()
    if kind not in kinds:
        raise ConfigError(f"saved config has unknown kind {kind!r}", path=source)
    return validate_config(kinds[kind], data, source=source)

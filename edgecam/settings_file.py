"""Reading the settings (the TOML file under the environment's overrides, one line per problem) and writing them."""

import difflib
import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsConfigDict, SettingsError

from edgecam.config import Settings
from edgecam.errors import ConfigError
from edgecam.redact import redact


def config_path(cli_path: Path | None) -> Path | None:
    """The TOML file to read: ``--config`` first, then ``$EDGECAM_CONFIG``, else none."""
    if cli_path is not None:
        return cli_path
    env = os.environ.get("EDGECAM_CONFIG")
    return Path(env) if env else None


ENV_PREFIX = "EDGECAM_"
NOT_SETTINGS = frozenset({"EDGECAM_CONFIG"})
"""``EDGECAM_*`` variables that are no setting: the settings file's path."""


def _variables(model: type[BaseModel], prefix: str, key: str) -> Iterator[tuple[str, str, FieldInfo]]:
    """Every variable that sets a field of ``model`` or of its sections, with its dotted key and its field."""
    for name, field in model.model_fields.items():
        variable, dotted = prefix + name.upper(), key + name
        yield variable, dotted, field
        if _is_section(field):
            assert isinstance(field.annotation, type)
            yield from _variables(field.annotation, f"{variable}__", f"{dotted}.")


def _is_section(field: FieldInfo) -> bool:
    return isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per ``EDGECAM_*`` variable that names no setting, with the nearest real name where it is close.

    pydantic-settings would pass over such a variable in silence (its env source only looks up known names).
    """
    known = [variable for variable, _, _ in _variables(Settings, ENV_PREFIX, "")]
    tails = [name.removeprefix(ENV_PREFIX) for name in known]
    lines = []
    for variable in sorted(environ):
        name = variable.upper()  # pydantic-settings matches names whatever their case
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS or name in known:
            continue
        near = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), tails, n=1, cutoff=0.8)
        hint = (
            f"; did you mean {ENV_PREFIX}{near[0]}?" if near else " (EDGECAM_<SECTION>__<KEY>, e.g. EDGECAM_MQTT__HOST)"
        )
        lines.append(f"{variable}: names no setting{hint}")
    return lines


def malformed_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per ``EDGECAM_*`` variable for a section or a list whose value is not the JSON it takes.

    pydantic-settings decodes such a value as JSON and fails with a traceback (SettingsError) when it is not;
    ``EDGECAM_CAMERA=picamera2`` is the usual slip, meant as ``EDGECAM_CAMERA__SOURCE=picamera2``.
    """
    fields = {  # pydantic-settings reads these as JSON
        variable: (key, field)
        for variable, key, field in _variables(Settings, ENV_PREFIX, "")
        if _is_section(field) or get_origin(field.annotation) in (list, tuple, dict, set)
    }
    lines = []
    for variable, value in sorted(environ.items()):
        if (found := fields.get(variable.upper())) is None:
            continue
        key, field = found
        try:
            decoded = json.loads(value)
        except ValueError as err:
            decoded, problem = None, str(err)
        else:
            problem = ""
        section = field.annotation if isinstance(field.annotation, type) else None
        if section is not None and issubclass(section, BaseModel):
            if isinstance(decoded, dict):
                continue
            per_key = f"{variable.upper()}__<KEY>"
            if value.lstrip().startswith("{"):
                lines.append(
                    f"{variable}: the section [{key}] is not valid JSON ({problem}): write a JSON object, "
                    f"or one variable per key ({per_key})"
                )
            else:
                example = f"{variable.upper()}__{next(iter(section.model_fields)).upper()}={redact(value)}"
                lines.append(
                    f"{variable}: names the section [{key}], not a key: write {example} (one variable per key: "
                    f"{per_key}), or the whole section as a JSON object"
                )
        elif problem:
            default = field.get_default(call_default_factory=True)
            example = f", e.g. {variable.upper()}='{json.dumps(default)}'" if default else ""
            lines.append(f"{variable}: {key} is a list, written as JSON, and this is not JSON ({problem}){example}")
    return lines


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Load and validate the settings; raise ConfigError with one line per problem.

    An ``EDGECAM_*`` variable that names no setting is an error, as an unknown key in the file is; so is one
    for a section or a list whose value is not JSON.
    """
    if problems := unknown_variables(os.environ) + malformed_variables(os.environ):
        raise ConfigError("\n".join(problems))
    if path is not None:
        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"config: cannot read {path}: {err.strerror or err}") from err
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"config: {path} is not valid TOML: {err}") from err

    class FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    # EDGECAM_CONFIG names the file; it is not a setting, so hide it from the environment source.
    saved = os.environ.pop("EDGECAM_CONFIG", None)
    try:
        return FromFile(**overrides)
    except ValidationError as err:
        raise ConfigError("\n".join(describe_errors(err))) from err
    except SettingsError as err:  # what malformed_variables does not foresee: still one line, no traceback
        cause = f": {err.__cause__}" if err.__cause__ is not None else ""
        raise ConfigError(redact(f"settings: {err}{cause}")) from err
    finally:
        if saved is not None:
            os.environ["EDGECAM_CONFIG"] = saved


def _key(loc: Sequence[int | str]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif re.fullmatch(r"function-after\[.*\]|list\[.*\]|tuple\[.*\]", part):
            continue
        else:
            parts.append(("." if parts else "") + part)
    return "".join(parts)


def _allowed_keys(loc: Sequence[int | str]) -> str:
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    return ", ".join(model.model_fields)


def describe_errors(err: ValidationError) -> list[str]:
    """One line per problem: the key, the bad value and what is allowed."""
    lines = []
    for e in err.errors(include_url=False):
        key = _key(e["loc"]) or "config"
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key (allowed here: {_allowed_keys(e['loc'])})")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        if isinstance(e["input"], dict):  # a rule across keys: the message names them
            lines.append(msg)
        else:
            lines.append(redact(f"{key}: {e['input']!r} is not allowed: {msg}"))
    return lines


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


SECRET_KEYS = frozenset({"password", "key"})


def render_toml(settings: Settings) -> str:
    """The effective settings as TOML, secrets redacted, unset optional keys commented out."""
    out: list[str] = []

    def emit(prefix: str, data: dict[str, Any]) -> None:
        tables = {k: v for k, v in data.items() if isinstance(v, dict)}
        for k, v in data.items():
            if k in tables:
                continue
            if v is None:
                out.append(f"# {k} = (not set)")
            elif k in SECRET_KEYS:
                out.append(f'{k} = "***"')
            else:
                out.append(redact(f"{k} = {_toml_value(v)}"))
        for k, v in tables.items():
            name = f"{prefix}.{k}" if prefix else k
            out.extend(["", f"[{name}]"])
            emit(name, v)

    emit("", settings.model_dump(mode="json"))
    return "\n".join(out) + "\n"

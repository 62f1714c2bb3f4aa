"""Pipeline configuration: one YAML file (conf/demo.yaml is the embedded default), CLI flags override."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import yaml

from features.errors import PipelineInputError

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "demo.yaml"
SPARK_CONF_PREFIX = "spark.conf."  # an override key spark.conf.<Spark setting> (from --conf KEY=VALUE)
REQUIRED_KEYS = ("paths.raw", "paths.warehouse", "spark.master", "dates.start", "dates.end", "source.kind")


class ConfigError(PipelineInputError):
    """A config file that is missing, unreadable or lacks a key."""


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read the YAML config, apply dotted-key overrides ({'spark.master': 'yarn'}), check required keys."""
    config_path = Path(path) if path else DEFAULT_CONFIG
    if not config_path.is_file():
        raise ConfigError(f"config file not found: {config_path}")
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {config_path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"config file {config_path} must hold a mapping at the top level")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key.startswith(SPARK_CONF_PREFIX):  # a Spark setting's own name holds dots: never split it
            conf = config.setdefault("spark", {}).setdefault("conf", None) or {}
            config["spark"]["conf"] = {**conf, key[len(SPARK_CONF_PREFIX):]: value}
        else:
            set_key(config, key, value)
    time_zone = (get_key(config, "spark.conf") or {}).get("spark.sql.session.timeZone", "UTC")
    if str(time_zone) != "UTC":
        raise ConfigError(f"spark.sql.session.timeZone is {time_zone!r} in {config_path} or --conf: recpipe's day "
                          f"boundaries are UTC (event dates, drops, snapshots); remove the setting")
    for key in REQUIRED_KEYS:
        if get_key(config, key) is None:
            raise ConfigError(f"config {config_path} is missing the key '{key}'")
    config["_path"] = str(config_path)
    return config


def get_key(config: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def set_key(config: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def parse_date(text: str | dt.date, what: str = "date") -> dt.date:
    if isinstance(text, dt.date):
        return text
    try:
        return dt.date.fromisoformat(str(text))
    except ValueError:
        raise PipelineInputError(f"invalid {what} '{text}': use YYYY-MM-DD") from None


def date_range(start: str | dt.date, end: str | dt.date) -> list[dt.date]:
    first, last = parse_date(start, "start date"), parse_date(end, "end date")
    if last < first:
        raise PipelineInputError(f"end date {last} is before start date {first}")
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]

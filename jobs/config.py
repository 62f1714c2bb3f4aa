"""Pipeline configuration: one YAML file (conf/demo.yaml is the embedded default), CLI flags override;
loaded into the typed models of jobs/settings.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from features.errors import PipelineInputError

if TYPE_CHECKING:
    from jobs.settings import Settings

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "demo.yaml"
SPARK_CONF_PREFIX = "spark.conf."  # an override key spark.conf.<Spark setting> (from --conf KEY=VALUE)
REQUIRED_KEYS = ("paths.raw", "paths.warehouse", "spark.master", "dates.start", "dates.end", "source.kind")


class ConfigError(PipelineInputError):
    """A config file that is missing, unreadable, lacks a key or holds an unknown key or a bad value."""


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> "Settings":
    """Read the YAML config, apply dotted-key overrides ({'spark.master': 'yarn'}; a key
    'spark.conf.<Spark setting>' sets that Spark setting under its own dotted name), validate it
    (jobs/settings.py: unknown keys, types, ranges, allowed values) and check the required keys."""
    from jobs.settings import as_settings

    config_path = Path(path) if path else DEFAULT_CONFIG
    if not config_path.is_file():
        raise ConfigError(f"config file not found: {config_path}")
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except (yaml.YAMLError, ValueError) as error:  # ValueError: a date YAML cannot build, e.g. 2026-02-30
        raise ConfigError(f"config file {config_path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"config file {config_path} must hold a mapping at the top level")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in ("dates.start", "dates.end"):  # a flag's date: the same message as --date's
            value = parse_date(value, f"{key.split('.')[1]} date")
        if key.startswith(SPARK_CONF_PREFIX):  # a Spark setting's own name holds dots: never split it
            section = config.get("spark")
            if not isinstance(section, dict):  # absent or empty (`spark:` alone is None): as set_key does
                section = config["spark"] = {}
            conf = section.get("conf")
            section["conf"] = {**(conf if isinstance(conf, dict) else {}), key[len(SPARK_CONF_PREFIX) :]: value}
        else:
            set_key(config, key, value)
    settings = as_settings(config, f"config {config_path}")
    for key in settings.missing(REQUIRED_KEYS):
        raise ConfigError(f"config {config_path} is missing the key '{key}'")
    return settings


def set_key(config: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
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

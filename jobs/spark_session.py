"""Build the SparkSession for jobs and tests: any master URL, UTC, Delta-compatible Parquet."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from typing import Any

from pyspark.sql import SparkSession

from features.errors import SparkMasterUnreachable
from jobs.settings import SparkSettings

# Settings every recpipe session needs whatever the master: UTC day boundaries for the time rules,
# Parquet timestamps Delta readers understand, and Arrow for pandas UDFs.
REQUIRED_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.ui.showConsoleProgress": "false",
    # Local files through Hadoop's raw local file system: no .crc side files, and a raw drop file whose
    # name holds ':' is readable (the checksummed one builds a relative Path from '.a:b.crc' and fails).
    "spark.hadoop.fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
}

DELTA_SPARK_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


MASTER_CONNECT_SECONDS = 3.0  # a master that does not accept a connection by then counts as unreachable


def check_master_reachable(master: str | None, timeout: float = MASTER_CONNECT_SECONDS) -> None:
    """Fails fast, before a JVM starts, when a spark:// master (any of a standby list) or the API server
    of a k8s:// master accepts no TCP connection: Spark itself retries for about a minute and logs Java
    stack traces meanwhile. Other masters (local, yarn) are not probed."""
    if not master or not master.startswith(("spark://", "k8s://")):
        return
    if master.startswith("spark://"):
        hosts = master.removeprefix("spark://").split(",")
        addresses = [_host_port(host, 7077) for host in hosts]
    else:
        url = master.removeprefix("k8s://")
        scheme = "http" if url.startswith("http://") else "https"
        addresses = [_host_port(url.split("://", 1)[-1].split("/", 1)[0], 80 if scheme == "http" else 443)]
    problems = []
    for host, port in addresses:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except (OSError, ValueError) as error:
            problems.append(f"{host}:{port}: {getattr(error, 'strerror', None) or error}")
    raise SparkMasterUnreachable(
        f"cannot reach the Spark master {master} ({'; '.join(problems)}): check --master "
        f"or spark.master, and that the cluster is up"
    )


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit():
        return text.strip(), default_port
    return host.strip("[]"), int(port)


def build_session(spark_config: SparkSettings | Mapping[str, Any], delta_backend: str = "auto") -> SparkSession:
    """spark_config: the `spark` section of the settings, or a mapping {master, app_name, conf: {key:
    value}, log_level} validated as one. delta_backend 'delta-spark' adds the io.delta extension
    settings (its jars must be on the classpath, e.g. --packages on a cluster)."""
    from jobs.settings import as_section

    spark_config = as_section(SparkSettings, spark_config, "spark")
    # Python workers (pandas UDFs) run the same interpreter as the driver unless the cluster says otherwise
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    check_master_reachable(spark_config.master)
    builder = SparkSession.builder.appName(spark_config.app_name)
    if spark_config.master:
        builder = builder.master(spark_config.master)
    conf = dict(REQUIRED_CONF)
    if delta_backend == "delta-spark":
        conf.update(DELTA_SPARK_CONF)
    conf.update(spark_config.conf)
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(spark_config.log_level)
    if spark_config.ship_code == "always" or (spark_config.ship_code == "auto" and not _is_local(session)):
        ship_code(session)
    return session


def _is_local(session: SparkSession) -> bool:
    return (session.sparkContext.master or "").startswith("local")  # set once the context runs


def ship_code(session: SparkSession) -> str | None:
    """Adds the zip of the project (jobs.dist) to the session, so executors whose Python has the
    third-party dependencies but not recpipe import it; once per session and code version. Returns the
    zip's name, or None when it was shipped already (also by spark-submit --py-files recpipe*.zip)."""
    from jobs.dist import shipped_zip

    context = session.sparkContext
    shipped = [os.path.basename(p) for p in context.getConf().get("spark.submit.pyFiles", "").split(",") if p]
    shipped += [os.path.basename(p) for p in getattr(context, "_python_includes", None) or []]
    if any(name.startswith("recpipe") and name.endswith(".zip") for name in shipped):
        return None
    archive = shipped_zip()
    context.addPyFile(str(archive))
    return archive.name

"""Build the SparkSession for jobs and tests: any master URL, UTC, Delta-compatible Parquet."""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from pyspark.sql import SparkSession

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


def build_session(spark_config: SparkSettings | Mapping[str, Any], delta_backend: str = "auto") -> SparkSession:
    """spark_config: the `spark` section of the settings, or a mapping {master, app_name, conf: {key:
    value}, log_level} validated as one. delta_backend 'delta-spark' adds the io.delta extension
    settings (its jars must be on the classpath, e.g. --packages on a cluster)."""
    from jobs.settings import as_section

    spark_config = as_section(SparkSettings, spark_config, "spark")
    # Python workers (pandas UDFs) run the same interpreter as the driver unless the cluster says otherwise
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
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
    return session

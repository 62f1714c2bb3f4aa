"""Errors a user can act on: the CLI prints their message on one line and exits with code 2."""


class PipelineInputError(Exception):
    """Bad or missing input (a missing drop, a bad date range, an unknown name)."""


class PublishRefused(PipelineInputError):
    """The publish gate or the export parity check said no: nothing was published (exit code 3)."""


class QualityCheckFailed(Exception):
    """A data quality check of severity `error` failed: the job's tables and the `quality` rows are
    committed, but nothing downstream may use those days until a rerun passes (exit code 4)."""


class SpecError(PipelineInputError, ValueError):
    """A schemas/*.yaml file (table schema, feature spec, quality checks) with an unknown key or a bad
    value: the message names the file and the key path, on one line."""

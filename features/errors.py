"""Errors a user can act on: the CLI prints their message on one line and exits with the code below.

0  success
1  internal error: a bug (the traceback is printed, then one line)
2  PipelineInputError (and FileNotFoundError): the user's input or usage — arguments, config, files,
   directories, a query, a request, a damaged table
3  PublishRefused: the export gate or parity check refused; nothing was published
4  QualityCheckFailed: a data quality check of severity error failed
5  ConcurrentWriteError: another writer won the commit race; nothing was committed, a rerun can succeed
6  SparkMasterUnreachable: the Spark master accepts no connection; a retry can help once it is up
7  OnlineStoreUnreachable: the Redis online store accepts no connection or stops answering; a retry can
   help once it is up
"""


class PipelineInputError(Exception):
    """Bad or missing input (a missing drop, a bad date range, an unknown name)."""


class PublishRefused(PipelineInputError):
    """The publish gate or the export parity check said no: nothing was published (exit code 3)."""


class QualityCheckFailed(Exception):
    """A data quality check of severity `error` failed: the job's tables and the `quality` rows are
    committed, but nothing downstream may use those days until a rerun passes (exit code 4)."""


class ConcurrentWriteError(Exception):
    """Another writer committed to the table during this write and this one could not be committed after
    it. Not the user's mistake: nothing was committed and a rerun can succeed (exit code 5)."""


class SparkMasterUnreachable(Exception):
    """The Spark master URL names a host and port that accept no connection: the cluster may be down or
    the URL wrong; a retry can help once it is up (exit code 6)."""


class SpecError(PipelineInputError, ValueError):
    """A schemas/*.yaml file (table schema, feature spec, quality checks) with an unknown key or a bad
    value: the message names the file and the key path, on one line."""


class OnlineStoreUnreachable(Exception):
    """The Redis online store accepts no connection (or stopped answering): it may be down or the address
    wrong; a retry can help once it is up (exit code 7)."""

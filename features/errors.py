"""Errors a user can act on: the CLI prints their message on one line and exits with code 2."""


class PipelineInputError(Exception):
    """Bad or missing input (a missing drop, a bad date range, an unknown name)."""

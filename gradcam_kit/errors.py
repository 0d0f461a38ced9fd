"""Errors that the command line reports to the user without a traceback."""


class KitError(Exception):
    """An error the user can act on: printed as one message, exit status 1."""

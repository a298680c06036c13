"""The one error type users see: a clear, one-line message naming the file and the problem."""


class InputError(Exception):
    """Bad input from the user (a file, a config value). The CLI prints it on one line and exits 2."""

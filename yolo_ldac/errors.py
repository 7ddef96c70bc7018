"""User-facing errors of yolo-ldac."""


class LDACError(Exception):
    """A user-facing error: the CLI prints it on one line and exits with status 2."""

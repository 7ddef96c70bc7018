"""User-facing errors of yolo-ldac."""


class LDACError(Exception):
    """A user-facing error: the CLI prints it on one line and exits with status 2."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; its message says how to continue it (the CLI prints it on one line, exit 130).

    Example:
        >>> str(Interrupted("interrupted in phase finetune; continue with `yolo-ldac compress resume=runs/ldac/exp`"))
        'interrupted in phase finetune; continue with `yolo-ldac compress resume=runs/ldac/exp`'
    """


def first_line(e: BaseException) -> str:
    """``Type: first line of the message`` of an exception, to quote it inside a one-line :class:`LDACError`.

    Example:
        >>> first_line(ValueError("bad shape\\nmore detail"))
        'ValueError: bad shape'
    """
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__

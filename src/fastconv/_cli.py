"""Option checks shared by the command-line tools (`python -m fastconv.train`, and
`python -m benchmarks.run` / `.epoch` / `.accuracy`): argparse types that turn a bad value into
a usage error (exit code 2) naming the option, and the output checks made before any work starts."""
import argparse
import math
import os
import tempfile

from ._shapes import bounded_number
from .threads import MAX_THREADS


def integer(text, low, what, high=None):
    """An int in [low, high], or an argparse usage error saying `what` was expected."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    if high is not None and value > high:
        raise argparse.ArgumentTypeError(f"must be at most {high}, got {text}")
    return value


def positive_int(text):
    return integer(text, 1, "a positive integer")


def threads(text):
    return integer(text, 1, "a positive integer", MAX_THREADS)


def names(text):
    """A comma-separated list of names (blanks dropped), or a usage error when it is empty."""
    listed = [n.strip() for n in text.split(",") if n.strip()]
    if not listed:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return listed


def number(text, low, high=math.inf, low_open=False):
    """A finite float in [low, high) ((low, high) with low_open), or an argparse usage error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    try:
        return bounded_number(value, None, low, high, low_open)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def writable_folder(path):
    """Create `path` if needed and prove a file can be written there: None, or what is wrong."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return f"cannot write to the output folder {path!r}: {exc.strerror or exc}"
    return None


def writable_file(path):
    """None when a file can be written at `path` (its folder made if needed), else what is
    wrong: checked before a run, whose results would otherwise be lost at its end."""
    if os.path.isdir(path):
        return f"{path} is a folder; a file is written there"
    return writable_folder(os.path.dirname(os.path.abspath(path)))

"""Files fastconv writes, written atomically: a temporary file beside the target, flushed to
disk, then renamed over it (os.replace). A reader sees the old file or the new one, never a torn
one; a write that fails (an exception, a full disk, a crash) leaves the old file as it was."""
import contextlib
import os
import tempfile

# The permissions a plain open() would give a new file (mkstemp's are 0600): read once, at
# import, since reading the umask means setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None):
    """A file object to write `path`'s new contents into (mode "wb" or "w")."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

"""Files fastconv writes, written atomically: a temporary file beside the target, flushed to
disk, then renamed over it (os.replace). A reader sees the old file or the new one, never a torn
one; a write that fails (an exception, a full disk, a crash) leaves the old file as it was."""
import contextlib
import errno
import os
import stat
import tempfile

# The permissions a plain open() would give a new file (mkstemp's are 0600): read once, at
# import, since reading the umask means setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

_SEPARATORS = tuple(s for s in (os.sep, os.altsep) if s)


def _target(path):
    """The file a write to `path` should replace, and the mode the new file gets; errors name
    `path` as the user gave it, and are raised before any temporary file exists."""
    if not path:
        raise ValueError(f"cannot write to {path!r}: the path is empty")
    if path.endswith(_SEPARATORS):
        raise ValueError(f"cannot write to {path!r}: it ends in a separator, so it names a folder")
    # Write through a symlink, as open() would: replacing the link itself would leave its target
    # stale. The temporary file must then go in the target's folder, or os.replace would have to
    # cross folders (even file systems).
    real = os.path.realpath(path)
    folder = os.path.dirname(real)
    if os.path.isdir(real):
        raise IsADirectoryError(errno.EISDIR, f"cannot write to {path!r}: it is a directory")
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise NotADirectoryError(errno.ENOTDIR,
                                     f"cannot write to {path!r}: {folder!r} is not a directory")
        raise FileNotFoundError(errno.ENOENT,
                                f"cannot write to {path!r}: the folder {folder!r} does not exist")
    try:  # re-saving keeps the file's permissions (a private 0600 file stays private)
        file_mode = stat.S_IMODE(os.stat(real).st_mode)
    except FileNotFoundError:
        file_mode = 0o666 & ~_UMASK
    return real, file_mode


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None):
    """A file object to write `path`'s new contents into (mode "wb" or "w")."""
    real, file_mode = _target(os.fsdecode(path))
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(real),
                               prefix=f".{os.path.basename(real)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode)
        os.replace(tmp, real)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

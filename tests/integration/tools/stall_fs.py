"""A passthrough FUSE filesystem whose file operations can be made to stall, for tests that show
sidecrypt's event loop never waits on a file.

    stall_fs.py BACKING MOUNTPOINT GATE

mounts BACKING at MOUNTPOINT (foreground, one thread per request). While the file GATE exists,
every operation named in it (one of: open, read, write, fsync, create, rename, per line) waits
until GATE is removed, at most 30 s. Runs until unmounted (fusermount -u) or killed.
Uses Debian's python3-fusepy (libfuse2)."""
import errno
import os
import sys
import time

import fusepy


class StallFs(fusepy.Operations):
    def __init__(self, backing, gate):
        self.backing = backing
        self.gate = gate

    def _path(self, path):
        return os.path.join(self.backing, path.lstrip("/"))

    def _maybe_stall(self, op):
        try:
            with open(self.gate) as f:
                ops = f.read().split()
        except FileNotFoundError:
            return
        if op not in ops:
            return
        deadline = time.monotonic() + 30
        while os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.02)

    def getattr(self, path, fh=None):
        st = os.lstat(self._path(path))
        return {k: getattr(st, k) for k in ("st_atime", "st_ctime", "st_gid", "st_mode",
                                            "st_mtime", "st_nlink", "st_size", "st_uid")}

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._path(path))

    def access(self, path, amode):
        if not os.access(self._path(path), amode):
            raise fusepy.FuseOSError(errno.EACCES)

    def mkdir(self, path, mode):
        os.mkdir(self._path(path), mode)

    def chmod(self, path, mode):
        os.chmod(self._path(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._path(path), uid, gid)

    def unlink(self, path):
        os.unlink(self._path(path))

    def rename(self, old, new):
        self._maybe_stall("rename")
        os.rename(self._path(old), self._path(new))

    def truncate(self, path, length, fh=None):
        with open(self._path(path), "r+") as f:
            f.truncate(length)

    def utimens(self, path, times=None):
        os.utime(self._path(path), times)

    def open(self, path, flags):
        self._maybe_stall("open")
        return os.open(self._path(path), flags)

    def create(self, path, mode, fi=None):
        self._maybe_stall("create")
        return os.open(self._path(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)

    def read(self, path, size, offset, fh):
        self._maybe_stall("read")
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        self._maybe_stall("write")
        return os.pwrite(fh, data, offset)

    def fsync(self, path, datasync, fh):
        self._maybe_stall("fsync")
        os.fsync(fh)

    def fsyncdir(self, path, datasync, fh):
        self._maybe_stall("fsync")

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)


if __name__ == "__main__":
    backing, mountpoint, gate = sys.argv[1:4]
    fusepy.FUSE(StallFs(backing, gate), mountpoint, foreground=True, nothreads=False,
                default_permissions=True)

"""
Output folders that an rnafm-hf command owns (`embed`, `fold`, `convert`): a marker naming the command, a ledger of
the files it wrote, a lock held for the whole run, and files that appear under their final names only when
complete.

Beside its outputs, an owned folder holds these hidden files, all named `.rnafm-hf.*`:

- `.rnafm-hf.json`, the marker: tool, command, package version and the run's settings, written atomically;
- `.rnafm-hf.files`, the ledger: the name of every file the command wrote, one a line, each appended *before* the
  file is created, so that no run, even a killed one, leaves a file of its own unlisted (the processes of a
  data-parallel run keep one each: `.rnafm-hf.files-1`, `-2`, ...);
- `.rnafm-hf.lock`, locked while a command writes the folder, and `.rnafm-hf.pid`, the pid of that command;
- a command's own journals, cleared with its run (`fold`: `.rnafm-hf.records`, the rows of finished records).

`overwrite` deletes the files the ledger lists and nothing else; a non-empty folder without a marker, or with
another command's, is refused.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

TOOL = "rnafm-hf"
NAMESPACE = ".rnafm-hf."
MARKER_NAME = ".rnafm-hf.json"
LEDGER_NAME = ".rnafm-hf.files"
LOCK_NAME = ".rnafm-hf.lock"
PID_NAME = ".rnafm-hf.pid"
PARTIAL_SUFFIX = ".partial"
_LEDGER = re.compile(re.escape(LEDGER_NAME) + r"(-\d+)?")
_PARTIAL = re.compile(r"\.(?P<name>.+)\.\d+" + re.escape(PARTIAL_SUFFIX))


class NoSpaceError(OSError):
    """The disk filled up while an output file was written (`errno.ENOSPC`); `filename` names the file."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class FolderInUseError(OSError):
    """Another rnafm-hf run holds the lock of the output folder."""


def partial_path(path: Path) -> Path:
    """Where a file is written before it is renamed into place (hidden, per process)."""
    return path.with_name(f".{path.name}.{os.getpid()}{PARTIAL_SUFFIX}")


def _is_no_space(error: BaseException) -> bool:
    # safetensors reports I/O errors as its own exception, with Rust's text for ENOSPC in it.
    return getattr(error, "errno", None) == errno.ENOSPC or any(
        text in str(error) for text in ("StorageFull", "os error 28")
    )


def _no_space(path: Path) -> NoSpaceError:
    return NoSpaceError(errno.ENOSPC, f"no space left on device while writing {path}", os.fspath(path))


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write(temporary_path)`, then rename onto `path`: readers see the old file or the whole new one, and a run
    that is killed or fails midway leaves no partial file under a final name. A full disk raises `NoSpaceError`."""
    temporary = partial_path(path)
    try:
        write(temporary)
        os.replace(temporary, path)
    except Exception as error:
        if _is_no_space(error):
            raise _no_space(path) from error
        raise
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def input_fingerprint(records: Iterable[tuple[str, str]]) -> str:
    """An identity of the input: every (id, sequence) in order."""
    digest = hashlib.sha256()
    for identifier, sequence in records:
        digest.update(f"{identifier}\t{sequence}\n".encode())
    return digest.hexdigest()


def model_fingerprint(model: Any) -> str:
    """A cheap identity of a torch model's weights: names, shapes and the first values of every tensor."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().flatten()[:16].float().cpu().numpy().tobytes())
    return digest.hexdigest()


class Journal:
    """An append-only file of JSON values, one a line. An append cut short (a kill, a full disk) leaves a line
    without its newline: readers skip it, and the next append starts on a new line."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> list[Any]:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        values = []
        for line in text.split("\n")[:-1]:  # what follows the last newline was cut short
            with suppress(ValueError):
                values.append(json.loads(line))
        return values

    def append(self, value: Any) -> None:
        line = (json.dumps(value) + "\n").encode()
        try:
            with open(self.path, "ab+") as handle:
                if size := handle.seek(0, os.SEEK_END):
                    handle.seek(size - 1)
                    if handle.read(1) != b"\n":
                        line = b"\n" + line
                handle.write(line)
        except OSError as error:
            if _is_no_space(error):
                raise _no_space(self.path) from error
            raise

    def rewrite(self, values: Iterable[Any]) -> None:
        write_text_atomically(self.path, "".join(json.dumps(value) + "\n" for value in values))


def _is_plain_name(name: Any) -> bool:
    """A file name inside the folder: no separators, not `.` or `..`, not our bookkeeping."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(character in name for character in ("/", "\\", "\0", os.sep))
        and not _is_bookkeeping(name)
    )


def _is_bookkeeping(name: str) -> bool:
    """Our hidden files, and the temporaries of those (a kill while the marker is written leaves one)."""
    match = _PARTIAL.fullmatch(name)
    return (match.group("name") if match else name).startswith(NAMESPACE)


def _newer(version: str, than: str) -> bool:
    """Whether release `version` comes after release `than` (a development build of a release is not newer than
    it); a version that cannot be read counts as not newer."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version).release > Version(than).release
    except InvalidVersion:
        return False


def _version() -> str:
    from . import __version__

    return __version__


@contextmanager
def hold_lock(lock_file: Path, folder: Path) -> Iterator[None]:
    """Hold `lock_file` for the block, or raise `FolderInUseError` at once when another process holds it."""
    from filelock import FileLock, Timeout

    # An OS lock (flock): the kernel drops it when its process exits or dies, even by kill -9, so no stale lock
    # can outlive a run. The file stays: deleting it on release could let two later runs lock two different files.
    lock = FileLock(lock_file, timeout=0)
    # The holder's pid, for the refusal message; filelock may keep its own data in the lock file itself.
    holder = lock_file.with_name(lock_file.name.removesuffix(".lock") + ".pid")
    try:
        lock.acquire()
    except Timeout:
        try:
            pid = f"pid {int(holder.read_text())}"
        except (OSError, ValueError):
            pid = "pid unknown"
        raise FolderInUseError(
            f"{folder} is being written by another rnafm-hf run ({pid}); wait for it to finish or choose another "
            "--output."
        ) from None
    try:
        with suppress(OSError):
            holder.write_text(f"{os.getpid()}\n")
        yield
    finally:
        with suppress(OSError):
            holder.unlink(missing_ok=True)
        lock.release()


def sibling_lock(folder: Path) -> Path:
    """The lock of a folder that is built elsewhere and moved in whole (`convert`): a hidden file beside it."""
    return folder.parent / f".{folder.resolve().name}{LOCK_NAME}"


class OutputFolder:
    """The folder that the rnafm-hf `command` writes (see the module docstring); `writer` numbers the processes of
    a data-parallel run, each with its own ledger."""

    def __init__(self, path: str | os.PathLike, command: str, writer: int = 0):
        self.path = Path(path)
        self.command = command
        self.ledger = Journal(self.path / (LEDGER_NAME if writer == 0 else f"{LEDGER_NAME}-{writer}"))
        self._listed: set[str] | None = None  # what this writer's ledger holds

    def journal(self, name: str) -> Journal:
        """A command's own append-only record in the folder (`fold`: the finished records); cleared with the run."""
        return Journal(self.path / f"{NAMESPACE}{name}")

    def marker(self) -> dict[str, Any] | None:
        """The marker, or None when there is none."""
        try:
            marker = json.loads((self.path / MARKER_NAME).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            marker = None
        if not isinstance(marker, dict) or marker.get("tool") != TOOL:
            raise FileExistsError(
                f"{self.path} holds a {MARKER_NAME} that rnafm-hf cannot read, so it is neither resumed nor "
                "replaced; choose another --output."
            )
        return marker

    def owned(self) -> set[str]:
        """The files that this command's runs in the folder listed as their own (the ledgers of all processes)."""
        names: set[str] = set()
        for entry in self.path.iterdir():
            if _LEDGER.fullmatch(entry.name):
                names.update(name for name in Journal(entry).read() if _is_plain_name(name))
        return names

    def check(self) -> bool:
        """Refuse a path that is a file, or a non-empty folder this command did not write (no marker, or another
        command's). True when the folder holds an earlier run of the command; False when it is absent or empty."""
        if self.path.is_symlink() and not self.path.exists():
            raise FileExistsError(f"{self.path} is a broken symbolic link; choose another --output.")
        if self.path.exists() and not self.path.is_dir():
            raise FileExistsError(f"{self.path} exists and is not a folder; choose another --output.")
        if not self.path.is_dir():
            return False
        marker = self.marker()
        if marker is None:
            if any(not _is_bookkeeping(entry.name) for entry in self.path.iterdir()):
                raise FileExistsError(
                    f"{self.path} is not empty and was not written by rnafm-hf {self.command} (it has no "
                    f"{MARKER_NAME}), so it is neither resumed nor replaced, not even with --overwrite; choose "
                    "another --output."
                )
            return False
        if marker.get("command") != self.command:
            raise FileExistsError(
                f"{self.path} was written by rnafm-hf {marker.get('command')}, not {self.command}; choose another "
                "--output."
            )
        if _newer(str(marker.get("version", "0")), _version()):
            raise FileExistsError(
                f"{self.path} was written by rnafm-hf {marker.get('version')}, newer than this one ({_version()}), "
                "whose folders this version may not read right; use that version, or choose another --output."
            )
        return True

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Create the folder if needed and hold its lock for the block (`FolderInUseError` if another run does)."""
        if self.path.exists() and not self.path.is_dir():
            raise FileExistsError(f"{self.path} exists and is not a folder; choose another --output.")
        self.path.mkdir(parents=True, exist_ok=True)
        with hold_lock(self.path / LOCK_NAME, self.path):
            yield

    def claim(
        self,
        settings: dict[str, Any],
        overwrite: bool,
        planned: Iterable[str] = (),
        ignore: Iterable[str] = (),
    ) -> str:
        """
        Take the folder for a run with `settings` (under `locked()`, in one process). Returns "new" (absent or
        empty), "resume" (an earlier run with equal settings, keys in `ignore` aside) or "replace" (`overwrite`:
        the earlier run's own files are deleted, nothing else). Refuses other settings without `overwrite`, and
        a folder holding, under a `planned` name, a file that no earlier run wrote.
        """
        settings = json.loads(json.dumps(settings))  # as the marker stores it
        action = "new"
        if self.check():
            action = "replace" if overwrite else "resume"
        if action == "resume":
            earlier = self.marker().get("settings") or {}
            differences = [
                key
                for key in sorted(set(settings) | set(earlier))
                if key not in ignore and settings.get(key) != earlier.get(key)
            ]
            if differences:
                raise FileExistsError(
                    f"{self.path} holds the output of another rnafm-hf {self.command} run (different "
                    f"{', '.join(differences)}); resuming would mix them. Choose another --output, or pass "
                    "--overwrite to replace it."
                )
        owned = self.owned()
        self._refuse_unowned(planned, owned)
        self._delete_partials(owned)
        if action == "replace":
            self._delete(owned)
        if action != "resume":
            self._reset()
            self.write_marker(settings)
        self._listed = None
        return action

    def write_marker(self, settings: Any = None) -> None:
        marker = {"tool": TOOL, "command": self.command, "version": _version(), "settings": settings}
        write_text_atomically(self.path / MARKER_NAME, json.dumps(marker, indent=2) + "\n")

    def record(self, name: str) -> None:
        """List `name` in the ledger as this command's file (before the file is written)."""
        if not _is_plain_name(name):
            raise ValueError(f"{name!r} is not a plain file name inside {self.path}.")
        if self._listed is None:
            self._listed = set(self.ledger.read())
        if name not in self._listed:
            self.ledger.append(name)
            self._listed.add(name)

    def write(self, name: str, write: Callable[[Path], None]) -> Path:
        """Write the file `name`, listed in the ledger first, atomically (see `write_atomically`)."""
        self.record(name)
        path = self.path / name
        write_atomically(path, write)
        return path

    def write_text(self, name: str, text: str) -> Path:
        return self.write(name, lambda temporary: temporary.write_text(text, encoding="utf-8"))

    def move_in(self, staging: Path) -> None:
        """
        Move the files of a finished `staging` folder in (`convert`). A new or empty folder is replaced by the
        whole staging folder at once; into one that an earlier run wrote (checked and allowed by the caller),
        files move one by one, each atomically, and then the earlier run's files that the new one did not write
        are deleted. Every other file stays.
        """
        names = sorted(entry.name for entry in staging.iterdir())
        if not self.check():
            staged = OutputFolder(staging, self.command)
            for name in names:
                staged.record(name)
            staged.write_marker()
            if self.path.is_dir():  # empty but for bookkeeping a killed run may have left
                self._reset(keep=())
            os.replace(staging, self.path)
            return
        owned = self.owned()
        self._refuse_unowned(names, owned)
        for name in names:
            self.record(name)
        for name in names:
            os.replace(staging / name, self.path / name)
        self._delete(owned - set(names))
        self.ledger.rewrite(names)
        self.write_marker()

    def _refuse_unowned(self, names: Iterable[str], owned: set[str]) -> None:
        """Refuse to write over files of the user's that happen to have an output's name."""
        if clashes := [name for name in names if name not in owned and os.path.lexists(self.path / name)]:
            raise FileExistsError(
                f"{self.path} holds {', '.join(sorted(clashes)[:5])}"
                + (f" and {len(clashes) - 5} more" if len(clashes) > 5 else "")
                + f", which rnafm-hf {self.command} would write but no earlier run of it wrote; move them away "
                "or choose another --output."
            )

    def _delete(self, names: Iterable[str]) -> None:
        for name in names:
            path = self.path / name
            if path.is_symlink() or path.is_file():
                path.unlink(missing_ok=True)

    def _delete_partials(self, owned: set[str]) -> None:
        """Temporaries a killed run left, of its own files only."""
        for entry in self.path.iterdir():
            if (match := _PARTIAL.fullmatch(entry.name)) and (
                match.group("name") in owned or _is_bookkeeping(entry.name)
            ):
                entry.unlink(missing_ok=True)

    def _reset(self, keep: Iterable[str] = (LOCK_NAME, PID_NAME)) -> None:
        """Remove the bookkeeping of an earlier run (marker, ledgers, journals)."""
        for entry in self.path.iterdir():
            if _is_bookkeeping(entry.name) and entry.name not in keep and not entry.is_dir():
                entry.unlink(missing_ok=True)

"""Unpickle an original RNA-FM `.pth` file without running anything from it.

Original files come from fairseq training runs: besides `args` (an `argparse.Namespace`) and `model` (the state
dict) they usually carry `optimizer_history`, `extra_state` (with numpy numbers and dtypes) and
`last_optimizer_state`. `torch.load(weights_only=True)` refuses numpy objects by default; here exactly the data-only
ones are allowed, for the duration of the load, and every other global is refused by name before unpickling starts.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

# Parts of a fairseq training checkpoint that `fm` ignores: dropped as soon as the file is loaded.
TRAINING_STATE_KEYS = ("last_optimizer_state", "optimizer_history", "extra_state")
_ZIP_MAGIC = b"PK\x03\x04"  # torch >= 1.6 writes zip archives
_PICKLE_PROTOCOL = b"\x80"  # torch < 1.6 writes pickles (protocol 2), which start with the PROTO opcode
_ALLOWED_IN_WORDS = "tensors, numbers, strings, containers, argparse.Namespace, numpy numbers, numeric dtypes and numeric arrays"
# torch's allow-list is process-wide: one load at a time adds to it and takes back what it added.
_ALLOW_LIST_LOCK = threading.Lock()


class UnsafeCheckpointError(ValueError):
    """The file's pickle asks for a global beyond the data-only allow-list; nothing from it was executed."""

    def __init__(self, message: str, refused: tuple[str, ...] = ()):
        super().__init__(message)
        self.refused = refused
        """The refused globals as the pickle names them (`posix.system`, ...), when known."""


def data_only_globals() -> list[Callable | tuple[Callable, str]]:
    """
    What the load allows beyond torch's defaults: objects that only hold data and run nothing while unpickled.

    `argparse.Namespace` (attributes set from the pickled dict); numpy's scalar and array reconstructors with
    `numpy.ndarray`, `numpy.dtype` and the dtype classes of bool, integer, float and complex dtypes only, so object,
    string and structured arrays are refused. The reconstructors are allowed under both their numpy 2 name
    (`numpy._core.multiarray.*`) and their numpy 1.x name (`numpy.core.multiarray.*`), whichever numpy runs here.
    """
    # Taken from the objects themselves, so the same functions whatever numpy version is installed.
    scalar = np.float64(0).__reduce__()[0]
    reconstruct = np.zeros(1).__reduce__()[0]
    allowed: list[Callable | tuple[Callable, str]] = [argparse.Namespace, np.ndarray, np.dtype]
    for function, name in ((scalar, "scalar"), (reconstruct, "_reconstruct")):
        allowed += [(function, f"numpy._core.multiarray.{name}"), (function, f"numpy.core.multiarray.{name}")]
    # Numeric dtypes (bool, signed/unsigned integers, floats, complex) of every width, as classes, so that unpickling
    # may set a dtype's state (byte order); numpy.dtypes.Float64DType and the like in numpy >= 1.25.
    numeric_dtype_classes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"}
    allowed += sorted(numeric_dtype_classes, key=lambda cls: cls.__name__)
    return allowed


def load_checkpoint_safely(path: str | os.PathLike) -> Any:
    """
    `torch.load` an original `.pth` file with `weights_only=True` and the `data_only_globals` allowed, nothing run.

    First `torch.serialization.get_unsafe_globals_in_checkpoint` lists the globals the pickle names beyond those
    allowed; any there raises `UnsafeCheckpointError` naming them, before a byte of the pickle is unpickled. Torch's
    weights-only unpickler then enforces the same list while loading (it alone checks files written by torch < 1.6,
    which are not zip archives, and objects the static listing cannot see). The allow-list is added for the load
    only, and only what the caller had not allowed already, so the process-wide list is left as it was.

    Tensors are memory-mapped (`mmap=True`): a page of the file is read only when its tensor is used. So the
    optimizer state, twice the size of the model, is never read; `last_optimizer_state`, `optimizer_history` and
    `extra_state` are dropped from a `{"args", "model", ...}` dict as soon as it is loaded. Files that cannot be
    memory-mapped (torch < 1.6) are read whole. A file that is neither a zip archive nor a pickle raises
    `pickle.UnpicklingError`; other errors (a truncated file) propagate as torch raises them.
    """
    with open(path, "rb") as file:
        header = file.read(len(_ZIP_MAGIC))
    if not header.startswith((_ZIP_MAGIC, _PICKLE_PROTOCOL)):
        # An HTML error page, a Git LFS pointer, ...: not for the unpickler, whose complaint would read like a refusal.
        raise pickle.UnpicklingError(
            "the file starts with neither a zip header (torch >= 1.6) nor a pickle header"
        )
    with _ALLOW_LIST_LOCK:
        already = torch.serialization.get_safe_globals()
        allow = [entry for entry in data_only_globals() if entry not in already]
        with torch.serialization.safe_globals(allow):
            if header == _ZIP_MAGIC:
                refused = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
                if refused:
                    raise _refusal(path, refused)
            try:
                checkpoint = _load(path)
            except pickle.UnpicklingError as error:
                if "Weights only load failed" not in str(error):
                    raise
                raise _refusal(path, [], _torch_reason(error)) from error
    if isinstance(checkpoint, dict) and "model" in checkpoint:
        for key in TRAINING_STATE_KEYS:
            checkpoint.pop(key, None)
    return checkpoint


def _load(path: str | os.PathLike) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
        # Files written by torch < 1.6 (not zip archives) cannot be memory-mapped.
        return torch.load(path, map_location="cpu", weights_only=True)


def _torch_reason(error: Exception) -> str:
    """What torch's weights-only error says was refused, without its boilerplate and advice to load unsafely."""
    boilerplate = ("(1)", "(2)", "In PyTorch", "Check the documentation")
    for line in str(error).splitlines()[1:]:
        line = line.split("WeightsUnpickler error:")[-1].strip()
        if line and not line.startswith(boilerplate):
            # Its first sentence: the rest advises allow-listing the global or loading with weights_only=False.
            return line.split(". ")[0].rstrip(".")
    return ""


def _refusal(path: str | os.PathLike, refused: list[str], reason: str = "") -> UnsafeCheckpointError:
    if not refused:  # named by torch's message only: a global, or a class it was asked to build
        refused = [a or b for a, b in re.findall(r"GLOBAL (\S+?)(?= |$)|<class '([^']+)'>", reason)]
    said = f" (torch: {reason})" if reason else ""
    if refused:
        it = "it" if len(refused) == 1 else "them"
        what = (
            f"asks for {', '.join(refused)}, which {'is' if len(refused) == 1 else 'are'} not among the data-only "
            f"objects allowed ({_ALLOWED_IN_WORDS}){said}; unpickling {it} could run code, and original RNA-FM files "
            f"never need {it}"
        )
    else:
        what = (
            f"asks for something beyond the data-only objects allowed ({_ALLOWED_IN_WORDS}){said}, so the file is "
            "damaged or asks to run code; original RNA-FM files never do that"
        )
    return UnsafeCheckpointError(
        f"Refused to load {path}: its pickle {what}. Nothing from it was executed.", tuple(refused)
    )

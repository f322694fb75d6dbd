"""
What a model name means: a local folder first; then a released model (`rna-fm`, `mrna-fm`, `rna-fm-ss`),
downloaded once from the authors' Hub repository and converted once into a cache folder; then a Hub repo id.

```python
>>> from rnafm_hf.model_names import looks_like_hub_id
>>> looks_like_hub_id("cuhkaih/rnafm"), looks_like_hub_id("../rna-fm"), looks_like_hub_id("rna_fm")
(True, False, False)

```
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from .options import DEFAULT_BASE_MODEL, KINDS

# The authors' files in their Hub repository, by the name our commands give each model. RNA-FM_pretrained.pth is
# the name fm downloads and the repository's; the other two as the original repository names them.
RELEASED_FILES = {
    "rna-fm": "RNA-FM_pretrained.pth",
    "mrna-fm": "mRNA-FM_pretrained.pth",
    "rna-fm-ss": "RNA-FM-ResNet_PDB-All.pth",
}
assert set(RELEASED_FILES) == set(KINDS)
HUB_ID_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class ModelNameError(FileNotFoundError):
    """A model name that is neither a model folder, a released model nor a reachable Hub repo; says which."""


def looks_like_hub_id(name: str) -> bool:
    """`OWNER/NAME` as the Hub spells repo ids; `./x`, `../x`, `/x`, `dir/sub/x`, plain names and `dir/x` where
    `dir` is a local folder are paths."""
    owner, slash, repo = name.partition("/")
    return (
        bool(slash and owner and repo)
        and set(owner + repo) <= HUB_ID_CHARACTERS
        and not owner.startswith(".")
        and not Path(owner).is_dir()
    )


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def converted_cache() -> Path:
    """Where released models are converted: `$RNAFM_HF_CACHE`, else `rnafm-hf` in the Hugging Face home folder;
    one subfolder per version of rnafm-hf, as a newer converter may write a folder differently."""
    from huggingface_hub.constants import HF_HOME

    from . import __version__

    return Path(os.environ.get("RNAFM_HF_CACHE") or Path(HF_HOME) / "rnafm-hf") / f"converted-{__version__}"


def _close_match(path: Path) -> str:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return ""
    names = [entry.name for entry in parent.iterdir() if entry.is_dir()]
    match = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return (
        f" Did you mean {str(parent / match[0]) if str(path.parent) != '.' else match[0]!r}?" if match else ""
    )


def check_model_name(name: str | os.PathLike, checkpoint: str = "an original checkpoint") -> str:
    """
    `name` if it can name a model, checked without loading anything: an existing model folder (one with a
    `config.json`), a released model's name, or a Hub id (`OWNER/NAME`; offline, one in the Hub cache). Otherwise a
    `ModelNameError` saying what `name` was taken for and how to get the folder (`checkpoint` names the original
    file to convert).
    """
    name = os.fspath(name)
    path = Path(name).expanduser()
    if path.is_dir() and not (name in RELEASED_FILES and not is_model_folder(path)):
        if not is_model_folder(path):
            raise ModelNameError(
                f"{name!r} is a folder but not a model folder: it has no config.json. Name a folder written by "
                f"`rnafm-hf convert` (convert {checkpoint} first) or by save_pretrained."
            )
        return name
    if path.exists() and not path.is_dir():
        raise ModelNameError(
            f"{name!r} is a file, not a model folder. An original .pth file is converted first: "
            f"`rnafm-hf convert {name}`."
        )
    if name in RELEASED_FILES:
        return name
    if not looks_like_hub_id(name):
        raise ModelNameError(
            f"No such folder: {name!r}.{_close_match(path)} Convert {checkpoint} into it first "
            f"(`rnafm-hf convert FILE --output {name}`), use a released model ({', '.join(RELEASED_FILES)}), or "
            "name a Hub repo as OWNER/NAME."
        )
    _check_hub_reachable(name)
    return name


def _check_hub_reachable(repo_id: str) -> None:
    """Offline (`HF_HUB_OFFLINE=1`), a Hub id not in the cache fails at once rather than after retries."""
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        raise ModelNameError(
            f"{repo_id!r} is not a local folder, and HF_HUB_OFFLINE=1 forbids downloading it from the Hub (it is "
            "not in the Hub cache). Unset HF_HUB_OFFLINE, or name a local folder."
        )


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def model_location(name: str, log: Callable[[str], None] | None = _to_stderr) -> str:
    """What to load for a checked `name`: a released model's cache folder (downloaded and converted the first
    time, saying so through `log`), anything else as it is."""
    if name in RELEASED_FILES and not is_model_folder(Path(name).expanduser()):
        if Path(name).expanduser().is_dir() and log is not None:
            log(
                f"The folder {name!r} here is not a model folder (no config.json): using the released {name}."
            )
        return os.fspath(released_model_folder(name, log=log))
    return name


def released_model_folder(name: str, log: Callable[[str], None] | None = None) -> Path:
    """
    The converted folder of a released model: `rna-fm`, `mrna-fm` or `rna-fm-ss` (with its RNA-FM backbone). The
    first call downloads the authors' `.pth` file from their Hub repository through huggingface_hub's cache and
    converts it (verified against `fm` when it is installed) into `converted_cache()`; later calls return that
    folder. Use it to load a released model with transformers:

        AutoModel.from_pretrained(rnafm_hf.model_names.released_model_folder("rna-fm"))
    """
    from filelock import FileLock, Timeout

    if name not in RELEASED_FILES:
        raise ValueError(f"{name!r} is not a released model; those are {', '.join(RELEASED_FILES)}.")
    folder = converted_cache() / name
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder.parent / f".{name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if log is not None:
            log(f"Waiting for another process converting the released {name} into {folder}")
        lock.acquire()
    try:
        if (folder / "config.json").is_file():  # converted meanwhile by another process
            return folder
        checkpoint = _download(RELEASED_FILES[name])
        backbone = _download(RELEASED_FILES["rna-fm"]) if name == "rna-fm-ss" else None
        from .conversion import convert_checkpoint

        if log is not None:
            log(f"Converting the released {name} ({checkpoint.name}) into {folder}, once")
        convert_checkpoint(checkpoint, folder, kind=name, backbone=backbone, log=log or (lambda _: None))
    finally:
        lock.release()
    return folder


def _download(filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=DEFAULT_BASE_MODEL, filename=filename))
    except Exception as error:  # offline, no network, no such file: the same advice
        raise ModelNameError(
            f"Could not get the released {filename} from the Hub repo {DEFAULT_BASE_MODEL} "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no details'}). Tried: a "
            f"local folder of that name, the converted cache {converted_cache()}, then the download. Offline, "
            f"convert a local copy instead: `rnafm-hf convert {filename} --output FOLDER`, then pass --model FOLDER."
        ) from error

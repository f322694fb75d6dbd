"""Hugging Face Hub access: `hf://` checkpoint paths and publishing converted folders."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from urllib.parse import unquote

from .output_folder import NAMESPACE

HF_SCHEME = "hf://"


class PublishError(RuntimeError):
    """An upload to the Hub failed; the local folder is untouched."""


def parse_hf_path(path: str) -> tuple[str, str, str | None]:
    """
    `hf://OWNER/REPO[@REVISION]/FILE` (a model repo) -> `(repo_id, filename, revision)`. A revision with a `/` in
    it is written URL-encoded (`refs%2Fpr%2F1`).

    ```python
    >>> parse_hf_path("hf://cuhkaih/rnafm/RNA-FM_pretrained.pth")
    ('cuhkaih/rnafm', 'RNA-FM_pretrained.pth', None)
    >>> parse_hf_path("hf://cuhkaih/rnafm@refs%2Fpr%2F1/weights/RNA-FM_pretrained.pth")
    ('cuhkaih/rnafm', 'weights/RNA-FM_pretrained.pth', 'refs/pr/1')

    ```
    """
    form = "hf://OWNER/REPO/FILE or hf://OWNER/REPO@REVISION/FILE"
    parts = path.removeprefix(HF_SCHEME).split("/", 2)
    if not path.startswith(HF_SCHEME) or len(parts) < 3 or not all(parts) or parts[2].endswith("/"):
        raise ValueError(f"{path!r} is not of the form {form}.")
    owner, repo, filename = parts
    if owner in ("datasets", "spaces"):
        raise ValueError(f"{path!r}: only model repos are read; the form is {form}.")
    repo, at, revision = repo.partition("@")
    if at and not revision:
        raise ValueError(f"{path!r} has an empty revision after '@'; the form is {form}.")
    return f"{owner}/{repo}", filename, unquote(revision) or None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """
    A local path as it is; `hf://OWNER/REPO/FILE` downloaded with `huggingface_hub.hf_hub_download`, so the Hub
    cache, tokens and offline mode (`HF_HUB_OFFLINE=1`: the cache only) apply as everywhere else.
    """
    if not str(path).startswith(HF_SCHEME):
        return Path(path)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id, filename, revision = parse_hf_path(str(path))
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision))
    except (LocalEntryNotFoundError, HfHubHTTPError) as error:
        where = f"{filename} of the model repo {repo_id}" + (f" at revision {revision}" if revision else "")
        raise FileNotFoundError(f"Could not get {path} ({where}): {str(error).splitlines()[0]}") from error


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """
    Create the model repo if needed (and the branch `revision`) and upload `folder` to it; returns the commit URL.

    The token comes from `token`, `HF_TOKEN` or `hf auth login`. On failure the local folder is left as it was and
    `PublishError` says how to retry.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            folder_path=folder,
            repo_id=repo_id,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload {folder.name} converted with rnafm-hf",
            ignore_patterns=[f"{NAMESPACE}*"],  # the folder's bookkeeping (output_folder), not the model's
        )
    except Exception as error:
        retry = ["rnafm-hf", "push", str(folder), repo_id]
        retry += ["--private"] if private else []
        retry += ["--revision", revision] if revision else []
        retry += ["--commit-message", commit_message] if commit_message else []
        raise PublishError(
            f"Uploading {folder} to {repo_id} failed: {type(error).__name__}: {error}\n"
            f"The local folder {folder} is complete and unchanged. Retry with: {shlex.join(retry)}"
        ) from error
    return str(getattr(commit, "commit_url", commit))


def point_card_at_repo(folder: str | os.PathLike, repo_id: str) -> bool:
    """Make the model card's code load `repo_id` (`from_pretrained("...")`, `pipeline(..., model="...")` and
    `get_class_from_dynamic_module(..., "...")`); returns whether the card changed."""
    card = Path(folder) / "README.md"
    if not card.is_file():
        return False
    text = card.read_text(encoding="utf-8")
    updated = re.sub(
        r'(from_pretrained\(|model=|get_class_from_dynamic_module\("[^"]*", )"[^"]*"', rf'\1"{repo_id}"', text
    )
    if updated != text:
        card.write_text(updated, encoding="utf-8")
    return updated != text

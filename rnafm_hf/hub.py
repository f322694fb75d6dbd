"""Hugging Face Hub access: `hf://` checkpoint paths and publishing converted folders."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

HF_SCHEME = "hf://"


class PublishError(RuntimeError):
    """An upload to the Hub failed; the local folder is untouched."""


def parse_hf_path(path: str) -> tuple[str, str, str | None]:
    """
    `hf://OWNER/REPO[@REVISION]/FILE` -> `(repo_id, filename, revision)`.

    ```python
    >>> parse_hf_path("hf://cuhkaih/rnafm/RNA-FM_pretrained.pth")
    ('cuhkaih/rnafm', 'RNA-FM_pretrained.pth', None)
    >>> parse_hf_path("hf://cuhkaih/rnafm@v1/weights/RNA-FM_pretrained.pth")
    ('cuhkaih/rnafm', 'weights/RNA-FM_pretrained.pth', 'v1')

    ```
    """
    parts = path.removeprefix(HF_SCHEME).split("/", 2)
    if not path.startswith(HF_SCHEME) or len(parts) < 3 or not all(parts):
        raise ValueError(
            f"{path!r} is not of the form hf://OWNER/REPO/FILE (optionally hf://OWNER/REPO@REVISION/FILE)."
        )
    owner, repo, filename = parts
    repo, _, revision = repo.partition("@")
    return f"{owner}/{repo}", filename, revision or None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """
    A local path as it is; `hf://OWNER/REPO/FILE` downloaded with `huggingface_hub.hf_hub_download`, so the Hub
    cache, tokens and offline mode (`HF_HUB_OFFLINE=1`: the cache only) apply as everywhere else.
    """
    if not str(path).startswith(HF_SCHEME):
        return Path(path)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo_id, filename, revision = parse_hf_path(str(path))
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision))
    except (LocalEntryNotFoundError, EntryNotFoundError, RepositoryNotFoundError) as error:
        raise FileNotFoundError(f"Could not get {path}: {str(error).splitlines()[0]}") from error


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

"""Uploading a dataset folder to the Hugging Face Hub, and the token private hub datasets need.

The token is read from the environment on each use and handed to huggingface_hub only; it is never
written anywhere. HF_ENDPOINT is read here too (huggingface_hub reads it once, at import).
"""

from __future__ import annotations

import os
from pathlib import Path

from user_errors import ConfigError

TOKEN_VARIABLES = ("HF_TOKEN", "MY_HF_TOKEN")  # MY_HF_TOKEN: the name the earlier Korean tool used


class PublishError(Exception):
    """The hub refused the upload or could not be reached; the message is one line."""


def hub_token() -> str | None:
    """The token from HF_TOKEN, else MY_HF_TOKEN; None when neither is set."""
    return next((value.strip() for name in TOKEN_VARIABLES if (value := os.environ.get(name, "")).strip()), None)


def check_push_target(repo_id: str) -> str:
    """The token for pushing to repo_id, or a ConfigError found before any work is done."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ConfigError(f"--push-to-hub '{repo_id}': not a repository id (use user/name)") from None
    if "/" not in repo_id:
        raise ConfigError(f"--push-to-hub '{repo_id}': name the owner too (user/name)")
    token = hub_token()
    if token is None:
        raise ConfigError("--push-to-hub needs a Hugging Face token with write access: set HF_TOKEN (or MY_HF_TOKEN)")
    return token


def _one_line(exc: Exception) -> str:
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status == 401:
            return "the hub refused the token (401 Unauthorized): check HF_TOKEN / MY_HF_TOKEN"
        if status == 403:
            return "the token may not write to this repository (403 Forbidden)"
        return f"the hub answered {status} ({str(exc).splitlines()[0][:160]})"
    first_line = (str(exc).splitlines() or [""])[0][:160]
    # huggingface_hub's HTTP client (httpx or its fork httpx2) raises a TransportError subclass offline.
    if isinstance(exc, OSError) or any(cls.__name__ == "TransportError" for cls in type(exc).__mro__):
        return f"the hub could not be reached ({type(exc).__name__}: {first_line})"
    return f"the upload failed ({type(exc).__name__}: {first_line})"


def push_folder(folder: Path, repo_id: str, private: bool, token: str) -> str:
    """Creates the dataset repo if needed and uploads the folder in one commit; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="dataset",
                                   commit_message="Upload dataset evolved with autoevol (Auto Evol-Instruct)")
    except Exception as exc:  # any failure is reported in one line; the local folder is untouched
        raise PublishError(f"--push-to-hub {repo_id}: {_one_line(exc)}; the dataset folder {folder} is complete, "
                           "retry with --publish-only") from None
    return commit.commit_url

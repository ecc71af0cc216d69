"""Checks shared by the argument dataclasses (and the code that builds objects from them)."""

from __future__ import annotations

from huggingface_hub.utils import HFValidationError, validate_repo_id


def check_probability(name: str, value: float) -> float:
    """`value` as a float, or a ValueError naming `name` unless 0 < value < 1."""
    if not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return float(value)


def check_repo_id(repo_id: str | None, what: str = "repo_id") -> str:
    """`repo_id` if it is a valid `namespace/name` Hub id, else a `ValueError` saying why."""
    if not repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"{what} must be 'namespace/name' (e.g. my-org/clinical-modernbert), got {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"{what} {repo_id!r} is not a valid Hub id: {err}") from None
    return repo_id


def check_no_hub_token(hub_token: str | None) -> None:
    """Refuse `--hub_token`: the Trainer saves it in plain text (`training_args.bin`, in every checkpoint too)."""
    if hub_token:
        raise ValueError(
            "hub_token is refused: the Trainer would save its value in plain text in training_args.bin and every "
            "checkpoint. Remove --hub_token and set HF_TOKEN or run `hf auth login` instead."
        )

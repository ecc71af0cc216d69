"""What the typed artifacts share: reading, validating and writing their JSON, and the checks they are built from."""

from __future__ import annotations

import dataclasses
import math
import os

from .files import read_json, save_json


class JsonArtifact:
    """A dataclass written to and read from one JSON object; `problems` lists what makes a JSON object invalid.

    Keys the dataclass does not know are ignored when read (a newer writer's additions).
    """

    @classmethod
    def problems(cls, data: dict) -> list[str]:
        raise NotImplementedError

    @classmethod
    def from_json(cls, data, path: str | os.PathLike):
        """Validate `data` (the content of `path`) and build the artifact; raises naming the file and each problem."""
        problems = cls.problems(data) if isinstance(data, dict) else [
            f"expected a JSON object, got {type(data).__name__}"]
        if problems:
            raise ValueError(f"Malformed {path}: " + "; ".join(problems))
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    @classmethod
    def read(cls, path: str | os.PathLike):
        return cls.from_json(read_json(path), path)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        save_json(self.to_json(), path)


def check(problems: list[str], data: dict, key: str, valid, expected: str, required: bool = True) -> None:
    """Add a problem when `data[key]` is present and not `valid`, or absent and `required`."""
    if key in data and not valid(data[key]):
        problems.append(f"{key!r} must be {expected}, got {data[key]!r}")
    elif key not in data and required:
        problems.append(f"missing key {key!r}")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_object(value) -> bool:
    return isinstance(value, dict)

"""The policy package's exception family.

Every problem carries where it is (file:line:column), which field it concerns in dotted
form (``rules[2].to``) and what is allowed, so an admin can fix it without reading code.
Validation collects all problems before raising, so one run shows every mistake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, order=True)
class Location:
    """A 1-based position in a source file."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One validation finding; errors stop a policy, warnings do not."""

    location: Location | None
    field: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        what = f"{self.field}: " if self.field else ""
        tag = "warning: " if self.severity == "warning" else ""
        return f"{where}{tag}{what}{self.message}"


class PolicyError(Exception):
    """Base of every error raised by the policies package."""


class PolicyLoadError(PolicyError):
    """The policy file could not be read or is not well-formed YAML."""


class PolicyValidationError(PolicyError):
    """The policy is well-formed YAML but says something invalid; nothing may be applied."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        super().__init__(
            f"{len(errors)} error(s) in policy:\n" + "\n".join(f"  {p}" for p in errors)
        )


class CompileError(PolicyError):
    """A valid policy cannot be compiled for the given target (e.g. offload required)."""

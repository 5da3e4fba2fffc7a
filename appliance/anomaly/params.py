"""Detector parameters a configuration may set, checked by name and type.

``ScoringConfig.params[kind]`` overrides a detector's keyword defaults by name: a typo must
fail loudly ("params.beacon.treshold: unknown parameter; BeaconDetector takes ..."), not be
ignored, and a flag must not silently accept a number.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from appliance.errors import AnomalyError

ParamValue = int | float | bool
SHARED = ("names", "history", "intel")
"""What a detector may be handed besides its numeric parameters: never set from a config."""


def detector_params(cls: type) -> dict[str, ParamValue]:
    """The parameters a config may set: keyword-only, with a number or bool default."""
    return {
        name: p.default
        for name, p in inspect.signature(cls).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        and isinstance(p.default, int | float | bool)
        and name not in SHARED
    }


def checked_params(kind: str, cls: type, given: Mapping[str, ParamValue]) -> dict[str, ParamValue]:
    """``given`` converted to the defaults' types; any unknown or ill-typed name raises."""
    allowed = detector_params(cls)
    out: dict[str, ParamValue] = {}
    for name, value in given.items():
        if name not in allowed:
            raise AnomalyError(
                f"params.{kind}.{name}: unknown parameter; {cls.__name__} takes "
                + ", ".join(sorted(allowed))
            )
        default = allowed[name]
        if isinstance(default, bool) != isinstance(value, bool) or not isinstance(
            value, int | float
        ):
            wanted = "true or false" if isinstance(default, bool) else "a number"
            raise AnomalyError(f"params.{kind}.{name}: {value!r} is not {wanted}")
        if isinstance(default, int) and not isinstance(default, bool) and value != int(value):
            raise AnomalyError(f"params.{kind}.{name}: {value!r} is not a whole number")
        out[name] = type(default)(value)
    return out

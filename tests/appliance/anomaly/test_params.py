"""Config parameters: names and types are checked against the detector's own signature."""

from __future__ import annotations

import pytest

from appliance.anomaly.beacon import BeaconDetector
from appliance.anomaly.params import checked_params, detector_params
from appliance.errors import AnomalyError


def test_only_numeric_and_flag_keywords_are_parameters() -> None:
    params = detector_params(BeaconDetector)
    assert params["threshold"] == 0.45 and params["skip_ntp"] is True
    assert "names" not in params and "context" not in params


def test_values_take_the_default_s_type() -> None:
    got = checked_params("beacon", BeaconDetector, {"min_connections": 20.0, "threshold": 1})
    assert got == {"min_connections": 20, "threshold": 1.0}
    assert type(got["min_connections"]) is int and type(got["threshold"]) is float


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"treshold": 0.5}, r"params\.beacon\.treshold: unknown parameter; BeaconDetector takes"),
        ({"skip_ntp": 0}, r"params\.beacon\.skip_ntp: 0 is not true or false"),
        ({"threshold": True}, r"params\.beacon\.threshold: True is not a number"),
        ({"threshold": "high"}, r"params\.beacon\.threshold: 'high' is not a number"),
        ({"min_connections": 12.5}, r"params\.beacon\.min_connections: 12\.5 is not a whole"),
    ],
)
def test_mistakes_name_the_parameter(given: dict[str, object], message: str) -> None:
    with pytest.raises(AnomalyError, match=message):
        checked_params("beacon", BeaconDetector, given)  # type: ignore[arg-type]

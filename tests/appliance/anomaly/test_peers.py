"""External peers and the names flows are reported by."""

from __future__ import annotations

from appliance.anomaly.detector import Networks
from appliance.anomaly.peers import PeerNames, remote_check
from tests.appliance.anomaly.traffic import DAY, T0, host, resolve


def test_remote_means_routable_and_not_the_office() -> None:
    is_remote = remote_check(Networks())
    assert is_remote("198.51.100.7") and is_remote("2a00:1450::1")
    for address in (
        host(5),
        "239.255.255.250",
        "224.0.0.251",
        "255.255.255.255",
        "ff02::fb",
        "127.0.0.1",
        "169.254.1.1",
        "0.0.0.0",
        "garbage",
    ):
        assert not is_remote(address), address


def test_names_come_from_address_answers_only_and_expire() -> None:
    names = PeerNames()
    names.add_dns(
        resolve(T0, host(1), "www.example.com", "cdn.example.net", "93.184.216.34", "2606:2800::1")
    )
    assert names.key("93.184.216.34") == "www.example.com"
    assert names.name("2606:2800::1") == "www.example.com"
    assert names.key("198.51.100.1") == "198.51.100.1"
    assert names.tracked() == 2
    names.expire(T0 + 2 * DAY)
    assert names.tracked() == 0


def test_names_are_capped_keeping_the_newest() -> None:
    names = PeerNames(max_entries=100)
    for i in range(1000):
        names.add_dns(resolve(T0 + i, host(1), f"n{i}.example", f"20.0.{i // 256}.{i % 256}"))
    assert names.tracked() <= 100
    assert names.key("20.0.3.231") == "n999.example"

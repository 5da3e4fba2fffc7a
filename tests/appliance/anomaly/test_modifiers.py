"""Rarity across the office and first-seen age raise or lower a finding's score."""

from __future__ import annotations

from appliance.anomaly.modifiers import PeerHistory, peer_modifiers
from tests.appliance.anomaly.traffic import DAY, HOUR, T0, host

PEER = "198.51.100.7"


def office(days: float, hosts: int = 10) -> PeerHistory:
    """A history watched for ``days``, with ``hosts`` active hosts using a common peer."""
    history = PeerHistory()
    for i in range(hosts):
        history.observe(host(100 + i), "mail.example", T0)
        history.observe(host(100 + i), "mail.example", T0 + days * DAY)
    return history


def test_a_peer_only_one_host_uses_raises_the_score() -> None:
    history = office(days=0.25)
    history.observe(host(1), PEER, T0 + 0.25 * DAY)
    assert peer_modifiers(history, PEER, T0 + 0.25 * DAY, 10) == {"rarity": 0.10}


def test_a_peer_most_hosts_use_lowers_it_in_proportion() -> None:
    history = office(days=0.25)
    assert peer_modifiers(history, "mail.example", T0 + 0.25 * DAY, 10)["rarity"] == -0.5
    for i in range(3):
        history.observe(host(i), PEER, T0 + 0.25 * DAY)
    assert peer_modifiers(history, PEER, T0 + 0.25 * DAY, 10) == {"rarity": -0.167}


def test_rarity_needs_an_office_of_a_few_hosts() -> None:
    history = office(days=0.25, hosts=2)
    history.observe(host(1), PEER, T0 + 0.25 * DAY)
    assert peer_modifiers(history, PEER, T0 + 0.25 * DAY, 2) == {}


def test_first_seen_raises_new_peers_only_after_the_warmup() -> None:
    history = office(days=2)
    history.observe(host(1), PEER, T0 + 2 * DAY - HOUR)
    assert peer_modifiers(history, PEER, T0 + 2 * DAY, 10)["first_seen"] == 0.10
    young = office(days=0.25)
    young.observe(host(1), PEER, T0 + 0.25 * DAY)
    assert "first_seen" not in peer_modifiers(young, PEER, T0 + 0.25 * DAY, 10)


def test_peers_in_use_when_watching_began_or_for_weeks_count_as_old() -> None:
    history = office(days=20)
    assert peer_modifiers(history, "mail.example", T0 + 20 * DAY, 10)["first_seen"] == -0.10
    history.observe(host(1), PEER, T0 + 2 * DAY)
    assert "first_seen" not in peer_modifiers(history, PEER, T0 + 5 * DAY, 10)
    assert peer_modifiers(history, PEER, T0 + 17 * DAY, 10)["first_seen"] == -0.10


def test_unknown_peers_get_no_modifiers() -> None:
    assert peer_modifiers(office(days=3), "192.168.1.50", T0 + 3 * DAY, 10) == {}


def test_hosts_per_peer_and_peers_are_bounded_and_age_out() -> None:
    history = PeerHistory(max_peers=1000, max_hosts_per_peer=5)
    for i in range(20):
        history.observe(host(i), PEER, T0 + i)
    assert history.host_count(PEER) == 5
    for i in range(5000):
        history.observe(host(1), f"20.0.{i // 256}.{i % 256}", T0 + 100 + i)
    assert len(history._peers) <= 1000
    assert history.first_seen("20.0.19.135") == T0 + 100 + 4999
    assert history.active_hosts(T0 + 6000) == 20
    history.expire(T0 + 31 * DAY)
    assert history.tracked() == 0

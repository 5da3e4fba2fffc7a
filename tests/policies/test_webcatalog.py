"""Tests for policies.webcatalog: the bundled catalogue and the loader's refusals."""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path

import pytest

from policies.webcatalog import (
    CATALOGUE_DIR,
    CatalogueError,
    default_catalogue,
    is_domain_entry,
    load_catalogue,
    read_category_file,
)

FILE_CATEGORIES = {
    "ads-trackers": "ads.example",
    "adult": "adult.example",
    "crypto-mining": "miner.example",
    "gambling": "casino.example",
    "malware-phishing": "phish.example",
}
GROUPS = {
    "social",
    "video",
    "games",
    "messaging",
    "ai-chat",
    "shopping",
    "dating",
    "streaming-music",
}


def test_bundled_catalogue_loads() -> None:
    cat = default_catalogue()
    assert cat is default_catalogue()  # cached
    assert cat.version == "2026.11.1"
    assert len(cat.services) >= 40
    assert set(cat.service_groups) >= GROUPS
    for group in cat.service_groups:
        assert any(s.group == group for s in cat.services.values()), group
    assert set(cat.safe_search) == {"google", "youtube", "bing", "duckduckgo"}
    assert len(cat.doh_names) >= 30
    assert "dns.google" in cat.doh_names and "cloudflare-dns.com" in cat.doh_names
    assert "1.1.1.1" in cat.doh_v4 and "2001:4860:4860::8888" in cat.doh_v6
    assert all(ipaddress.ip_address(a).version == 4 for a in cat.doh_v4)
    assert all(ipaddress.ip_address(a).version == 6 for a in cat.doh_v6)
    assert set(cat.categories) == set(FILE_CATEGORIES) | set(cat.service_groups)


def test_catalogue_is_read_only() -> None:
    cat = default_catalogue()
    with pytest.raises(TypeError):
        cat.services["evil"] = cat.services["facebook"]  # type: ignore[index]
    with pytest.raises(TypeError):
        cat.safe_search["google"].modes["strict"] = "example.com"  # type: ignore[index]


def test_lab_services_and_shared_infrastructure() -> None:
    cat = default_catalogue()
    assert cat.services["example-social"].domains == ("social.example",)
    assert cat.services["example-video"].group == "video"
    # Blocking video must not take Google search (and everything else on google.com) down.
    for service in cat.services.values():
        assert not {"google.com", "*.google.com", "www.google.com"} & set(service.domains)
    assert "facebook.com" in cat.services["facebook"].domains


def test_expand_services() -> None:
    cat = default_catalogue()
    names = [s.name for s in cat.expand_services(["tiktok", "social", "discord", "tiktok"])]
    assert names[0] == "tiktok"
    assert names.count("tiktok") == 1
    assert {"facebook", "instagram", "example-social", "discord"} <= set(names)
    assert "youtube" not in names
    dating = cat.expand_services(["dating"])
    assert {s.group for s in dating} == {"dating"}
    assert cat.expand_services([]) == ()
    with pytest.raises(KeyError, match="myspace"):
        cat.expand_services(["social", "myspace"])


def test_safe_hosts() -> None:
    cat = default_catalogue()
    hosts = cat.safe_hosts({"google": "strict", "youtube": "moderate"})
    assert hosts["www.google.de"] == "forcesafesearch.google.com"
    assert hosts["google.com"] == "forcesafesearch.google.com"
    assert hosts["www.youtube.com"] == "restrictmoderate.youtube.com"
    assert "www.bing.com" not in hosts
    assert "mail.google.com" not in hosts  # exact names only
    assert cat.safe_hosts({"youtube": "default"})["m.youtube.com"] == "restrict.youtube.com"
    assert cat.safe_hosts({"bing": "strict"})["www.bing.com"] == "strict.bing.com"
    assert cat.safe_hosts({"duckduckgo": "strict"})["duckduckgo.com"] == "safe.duckduckgo.com"
    with pytest.raises(KeyError):
        cat.safe_hosts({"altavista": "strict"})
    with pytest.raises(ValueError, match="moderate"):
        cat.safe_hosts({"google": "moderate"})


@pytest.mark.parametrize(("name", "lab_name"), sorted(FILE_CATEGORIES.items()))
def test_category_files(name: str, lab_name: str) -> None:
    category = default_catalogue().categories[name]
    assert category.file is not None and category.domains == ()
    title, domains = read_category_file(category.file)
    assert title
    assert lab_name in domains
    for line in category.file.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            assert is_domain_entry(line.strip()), line


def test_service_group_categories() -> None:
    social = default_catalogue().categories["social"]
    assert social.file is None
    assert social.title == "Social networks"
    assert "facebook.com" in social.domains and "social.example" in social.domains
    assert "youtube.com" not in social.domains


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("example.com", True),
        ("*.example.com", True),
        ("xn--bcher-kva.example", True),
        ("Example.com", False),
        ("com", False),
        ("1.2.3.4", False),
        ("-bad.example", False),
        ("a..example", False),
        ("under_score.example", False),
        ("*.*.example.com", False),
    ],
)
def test_is_domain_entry(text: str, ok: bool) -> None:
    assert is_domain_entry(text) is ok


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A writable copy of the bundled catalogue to break one thing in."""
    copy = tmp_path / "catalogue"
    shutil.copytree(CATALOGUE_DIR, copy)
    assert load_catalogue(copy).version == default_catalogue().version
    return copy


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        ("web_services.yaml", "group: dating", "group: romance", "unknown group 'romance'"),
        ("web_services.yaml", "[tumblr.com]", "[Tumblr.com]", "Tumblr.com"),
        ("web_services.yaml", "[tumblr.com]", "[tumblr.com, fb.com]", "already under 'facebook'"),
        ("web_services.yaml", "[tumblr.com]", '["*.fbcdn.net"]', "already under 'facebook'"),
        ("web_services.yaml", "  tumblr:\n", "  Tumblr:\n", "'Tumblr' is not an id"),
        ("web_services.yaml", "  tumblr:\n", "  tiktok:\n", "duplicate key 'tiktok'"),
        ("web_services.yaml", "  pof:\n", "  dating:\n", "also a group id"),
        ("web_services.yaml", '"2026.11.1"', '"next"', "not YYYY.MM.N"),
        ("safe_search.yaml", "default: strict", "default: moderate", "not one of its modes"),
        ("safe_search.yaml", "- bing.com\n", "- www.google.de\n", "already under 'google'"),
        ("safe_search.yaml", "- bing.com\n", "- '*.bing.com'\n", "exact hostname"),
        ("safe_search.yaml", '"2026.11.1"', '"2026.11.2"', "differs from"),
        ("doh.yaml", "- 8.8.4.4\n", "- 8.8.4.0/24\n", "not an address"),
        ("doh.yaml", "- 8.8.4.4\n", "- 2001:db8::1\n", "not an IPv4 address"),
        ("doh.yaml", '- "2a09::"\n', '- "2a09:0::"\n', "canonical"),
        ("doh.yaml", '- "2a09::"\n', "- 2a09::\n", "expected text"),
        ("doh.yaml", "- doh.pub\n", "- doh.pub\n  - doh.pub\n", "listed twice"),
    ],
)
def test_broken_catalogue(broken: Path, file: str, old: str, new: str, message: str) -> None:
    edit(broken / file, old, new)
    with pytest.raises(CatalogueError, match=message) as info:
        load_catalogue(broken)
    assert file in str(info.value)


def test_broken_category_file(broken: Path) -> None:
    path = broken / "categories" / "gambling.txt"
    edit(path, "bet365.com\n", "bet365 com\n")
    with pytest.raises(CatalogueError, match=r"gambling\.txt: line \d+: 'bet365 com'"):
        load_catalogue(broken)


def test_category_file_named_like_a_group(broken: Path) -> None:
    shutil.copy(broken / "categories" / "adult.txt", broken / "categories" / "social.txt")
    with pytest.raises(CatalogueError, match=r"social\.txt.*also a service group"):
        load_catalogue(broken)


def test_missing_file(broken: Path) -> None:
    (broken / "doh.yaml").unlink()
    with pytest.raises(CatalogueError, match=r"doh\.yaml: cannot read"):
        load_catalogue(broken)

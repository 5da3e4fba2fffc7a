"""Registered domains (eTLD+1) without the full Public Suffix List.

Both DNS detectors group queries by the name a party actually registered: a tunnel's
thousands of subdomains belong to one registered domain, and a DGA's names are new
registered domains. The full list is ~10,000 rules and a dependency; the detectors only
need the common multi-label suffixes right (``bbc.co.uk`` is ``bbc``'s, not ``co``'s).
A suffix missing here makes the registered domain one label too short (``example.co.zz``
-> ``co.zz``): for a tunnel that still groups its names together; for DGA scoring the
label scored is then ``co``, a common string, so a miss errs towards *not* alerting.

Private suffixes (``cloudfront.net``, ``github.io``) are deliberately *not* suffixes here:
a CDN's hashed host names then stay subdomains of the CDN, where a few of them per client
are normal, instead of each becoming a "new registered domain" with a random-looking label.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

_SECOND_LEVEL = {
    # country: second-level labels registrations sit under
    "uk": "co org ac gov ltd plc me net sch nhs police mod",
    "au": "com net org edu gov asn id csiro act nsw nt qld sa tas vic wa",
    "nz": "co org net ac govt school geek gen kiwi maori iwi mil",
    "jp": "co ne or ac go gr ed lg ad",
    "br": "com net org gov edu mil art blog eco emp ind inf jus leg tur",
    "cn": "com net org gov edu ac mil ah bj cq fj gd gs gx gz ha hb he hi hk hl hn jl js jx"
    " ln nm nx qh sc sd sh sn sx tj tw xj xz yn zj",
    "mx": "com gob org net edu",
    "in": "co net org gov ac nic edu res firm gen ind",
    "za": "co org gov ac net edu web nom",
    "ar": "com gob org net edu gov int mil tur",
    "tr": "com gov org net edu gen biz info web av bel k12 pol tv",
    "kr": "co or go ac ne re pe",
    "tw": "com gov org net edu idv",
    "hk": "com gov org net edu idv",
    "sg": "com gov org net edu per",
    "my": "com gov org net edu",
    "id": "co or go ac sch my net web mil biz",
    "th": "co go ac or in net mi",
    "ua": "com in kiev org net gov edu od dp kh lviv",
    "pl": "com org net gov edu waw info biz",
    "il": "co ac org net gov muni",
    "es": "com gob org edu nom",
    "at": "gv co or ac",
    "ca": "qc on bc ab mb nb nf nl ns nt nu pe sk yk gc",
    "fr": "gouv asso com tm nom",
    "ru": "com org net spb msk pp",
    "pe": "com gob org edu net nom",
    "co": "com gov org net edu nom",
    "vn": "com gov org net edu",
    "ph": "com gov org net edu",
    "pk": "com gov org net edu",
    "eg": "com gov org net edu",
    "sa": "com gov org net edu",
    "ng": "com gov org net edu",
    "ke": "co or go ac ne",
    "bd": "com gov org net edu",
    "lk": "com gov org net edu",
    "np": "com gov org net edu",
    "ve": "com gob org net edu",
    "cl": "gob gov",
    "uy": "com gub org net edu",
    "ec": "com gob org net edu",
    "gt": "com gob org net edu",
    "bo": "com gob org net edu",
    "py": "com gov org net edu",
    "do": "com gob org net edu",
    "pa": "com gob org net edu",
    "cr": "co go or ac",
    "zw": "co gov org ac",
    "tz": "co go or ac ne",
    "ug": "co go or ac ne",
    "gh": "com gov org edu",
    "cy": "com gov org net ac",
    "mt": "com gov org net edu",
    "gr": "com gov org net edu",
    "pt": "com gov org edu",
    "it": "gov edu",
    "be": "ac",
    "no": "co",
    "hu": "co",
}
MULTI_LABEL_SUFFIXES: frozenset[str] = frozenset(
    f"{second}.{top}" for top, seconds in _SECOND_LEVEL.items() for second in seconds.split()
) | frozenset({"in-addr.arpa", "ip6.arpa", "eu.org", "us.com", "uk.com", "eu.com", "co.com"})
"""Public suffixes of two labels; every single top-level label is a suffix by itself."""

NOT_INTERNET = frozenset({"arpa", "local", "localhost", "internal", "lan", "home", "invalid"})
"""Top-level labels whose names are never a registration on the internet (reverse lookups,
mDNS, the office's own zones): neither tunnels nor DGAs, so both detectors skip them."""


class SplitName(NamedTuple):
    """``www.bbc.co.uk`` -> subdomain ``www``, label ``bbc``, suffix ``co.uk``."""

    subdomain: str
    label: str
    suffix: str

    @property
    def registered(self) -> str:
        """The registered domain (eTLD+1), or the name itself when it has no label."""
        return f"{self.label}.{self.suffix}" if self.label and self.suffix else self.label


@lru_cache(maxsize=65536)
def split_name(qname: str) -> SplitName:
    """Split a lower-case query name (no trailing dot) at its registered domain.

    A single-label name (``printer``, ``wpad``) has no suffix: label is the name. A name
    that *is* a suffix (``co.uk``) has an empty label. Cached: resolvers see the same
    names again and again, and this is on the per-record path.
    """
    last = qname.rfind(".")
    if last < 0:
        return SplitName("", qname, "")
    prev = qname.rfind(".", 0, last)
    if prev < 0:
        if qname in MULTI_LABEL_SUFFIXES:
            return SplitName("", "", qname)
        return SplitName("", qname[:last], qname[last + 1 :])
    if qname[prev + 1 :] in MULTI_LABEL_SUFFIXES:
        start = qname.rfind(".", 0, prev)
        subdomain = qname[:start] if start > 0 else ""
        return SplitName(subdomain, qname[start + 1 : prev], qname[prev + 1 :])
    return SplitName(qname[:prev], qname[prev + 1 : last], qname[last + 1 :])


def registered_domain(qname: str) -> str:
    """``a.b.example.co.uk`` -> ``example.co.uk``; see ``split_name``."""
    return split_name(qname).registered


def is_internet_name(split: SplitName) -> bool:
    """True for a name that could be a registration on the internet: it has a label and a
    suffix, and the suffix is not a reverse or local zone (``NOT_INTERNET``)."""
    if not split.label or not split.suffix:
        return False
    top = split.suffix[split.suffix.rfind(".") + 1 :]
    return top not in NOT_INTERNET

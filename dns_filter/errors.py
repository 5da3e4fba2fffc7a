"""The dns_filter exception family: each message says what failed and, where it helps, why."""


class DnsFilterError(Exception):
    """Base of every error the DNS filter raises on purpose."""


class WireError(DnsFilterError):
    """A DNS message could not be parsed or built (malformed or truncated wire data)."""


class UpstreamError(DnsFilterError):
    """No upstream answered in time; the caller should answer SERVFAIL (or serve stale)."""

"""EdgeGuard dns_filter package."""

"""EdgeGuard policies package."""

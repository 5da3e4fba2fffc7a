"""EdgeGuard appliance package."""

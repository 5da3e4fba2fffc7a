"""EdgeGuard webui package."""

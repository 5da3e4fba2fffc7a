"""The appliance's exception family: each message says what failed and what to do about it."""


class ApplianceError(Exception):
    """Base of every error the controller reports to a user."""


class LabError(ApplianceError):
    """The network-namespace lab could not be built, used or removed."""


class ApplyError(ApplianceError):
    """A ruleset could not be applied; the previous ruleset is still enforced."""


class AnomalyError(ApplianceError):
    """Anomaly scoring could not read its input, or was configured wrong."""

"""The small hierarchy of domain errors; `api/` maps them to HTTP errors."""


class HazardwatchError(Exception):
    """Base of every error hazardwatch raises on purpose."""


class ConfigError(HazardwatchError):
    """The configuration cannot be used; the message says which value and why."""


class RegistryError(HazardwatchError):
    """A registry file or record is invalid."""


class StoreError(HazardwatchError):
    """The time-series store refused or failed a write."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class NotFoundError(HazardwatchError):
    """The requested object does not exist."""


class InvalidTransitionError(HazardwatchError):
    """A state change that the lifecycle does not allow, e.g. acknowledging twice."""


class InvalidInputError(HazardwatchError):
    """A value that is well formed but not allowed here, e.g. a deadline years ahead."""

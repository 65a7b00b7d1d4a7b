"""Exception hierarchy shared by every SAODF component."""


class SaodfError(Exception):
    """Base class of the errors SAODF raises on purpose; the CLI prints them without a traceback."""


class ConfigError(SaodfError):
    """Invalid or missing configuration (environment variable, option or file)."""


class InvalidTelemetryError(SaodfError):
    """A telemetry message that breaks the message contract."""

    def __init__(self, reason: str, payload: object = None):
        super().__init__(reason)
        self.reason = reason
        self.payload = payload


class DatasetError(SaodfError):
    """A dataset file or folder that is missing or cannot be parsed."""


class ValidationFailedError(SaodfError):
    """A Great Expectations gate rejected a batch; the batch was quarantined."""


class ServiceError(SaodfError):
    """A local service failed to start, stop or answer its health check."""

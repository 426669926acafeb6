"""telehub: a real-time IoT telemetry hub."""

__version__ = "0.1.0"

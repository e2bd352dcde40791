"""Shared runtime for xcagw services: settings, telemetry, metrics, logging and gRPC bootstrap."""

"""token_service: NHS OAuth client assertions, GP Connect JWTs, key rotation and the JWKS."""

__version__ = "0.1.0"

"""token_service."""

"""The HTTP API: DeepDetect's routes and the native /api/v1, thin handlers over one core."""

from simsearch.api.app import create_app

__all__ = ["create_app"]

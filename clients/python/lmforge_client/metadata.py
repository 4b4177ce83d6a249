"""The gRPC metadata keys of the public contract, shared by the clients and the gateway."""

from __future__ import annotations

#: ``authorization: Bearer <API key>``
AUTHORIZATION = "authorization"
#: pins a request to one deployment of a route (by the deployment's name)
PIN_METADATA_KEY = "x-lmforge-deployment"
#: the key a weighted split hashes, so one caller sticks to one deployment
ROUTING_KEY_METADATA_KEY = "x-lmforge-routing-key"


def bearer(api_key: str) -> tuple[str, str]:
    """The metadata pair that carries ``api_key``."""
    return (AUTHORIZATION, f"Bearer {api_key}")

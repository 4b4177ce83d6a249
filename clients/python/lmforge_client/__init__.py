"""lmforge's Python client: typed sync/async clients over the generated gRPC stubs.

A service that calls lmforge installs this distribution (``lmforge-client``) alone: it needs
protobuf and grpcio, nothing of the server.
"""

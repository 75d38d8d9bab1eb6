"""NATS infrastructure for tillmesh: subjects, identities, permissions, server configs, processes.

Pure infrastructure: nothing here imports another tillmesh package, so the broker
can be tested (and reasoned about) against a real nats-server on its own.
"""

from broker.errors import (
    BinaryNotFound,
    BrokerError,
    ConfigError,
    CredentialsError,
    IdentityError,
    InvalidReplicaId,
    ServerNotReady,
    ServerStartError,
)

__all__ = [
    "BinaryNotFound",
    "BrokerError",
    "ConfigError",
    "CredentialsError",
    "IdentityError",
    "InvalidReplicaId",
    "ServerNotReady",
    "ServerStartError",
]

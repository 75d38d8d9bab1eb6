"""Replication between replicas: the wire protocol (`protocol`, pure), the engine that
decides what to pull and push (`engine`, with `peers`, `serve`, `budget`, `config`),
the one driver that feeds it (`driver`), and the NATS transport (`transport`)."""

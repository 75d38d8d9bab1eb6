"""HQ on PostgreSQL: the event store, read model, reports and ingest workers of a chain's HQ.

`tillmesh hq --db postgresql://...` keeps HQ's events and read model here instead of a
SQLite log; `--shard K/N` runs one of N ingest workers, each owning a share of the
stores. SQLite stays HQ's embedded default. `core` and `conflict` never import this.
"""

"""The on-call library over a replica's SQLite file: replay to a moment, diff two logs,
export/import for a USB stick, restore from a peer, and what they share (`common`)."""

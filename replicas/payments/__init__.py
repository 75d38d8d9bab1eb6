"""Card payments: the processor adapter a till talks to, floor limits for offline
payments, forwarding of stored ones, and a small acquirer service for the demo and tests."""

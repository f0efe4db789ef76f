"""Per-series state beyond memory: row encoding, the local store, and checkpoint bookkeeping.

Pure Python and numpy (SQLite from the standard library); knows nothing of Kafka or torch.
"""

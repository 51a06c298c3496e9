"""Domain logic. Services work inside the caller's transaction: they never commit."""

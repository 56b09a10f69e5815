"""Storage: the shared declarative base, engine and units of work, and the tables every layer reads."""

"""The bottom layer: types and text rules every other package shares; imports no other package here."""

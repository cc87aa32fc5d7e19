"""Read a broker destination back: one module per broker, each with ``consume``."""

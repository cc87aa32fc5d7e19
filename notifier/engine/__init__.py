"""The daemon: it claims captured events and hands each delivery to its sink."""

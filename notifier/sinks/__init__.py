"""Destinations: each kind of target the engine delivers to."""

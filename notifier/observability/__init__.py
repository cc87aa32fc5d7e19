"""Logging, metrics, health endpoints and credential masking."""

"""Tools around the product: notifier dev, the demo receiver, notifier bench."""

"""The HTTP side of the bridge: webhook receiver, health and metrics."""

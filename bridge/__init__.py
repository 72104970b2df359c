"""consent-bridge."""

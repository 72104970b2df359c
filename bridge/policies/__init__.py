"""Policies: the bridge's rules as pure functions, with no I/O, each unit- and property-tested."""

"""The command line: commands parse, call runtime and services, render."""

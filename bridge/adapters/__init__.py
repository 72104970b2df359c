"""The CRM adapters: the contract (base, spec), one folder per vendor, and the registry."""

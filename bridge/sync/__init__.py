"""Moving state between the CRMs: reconcile, propagate, erase, and the inbox behind webhooks."""

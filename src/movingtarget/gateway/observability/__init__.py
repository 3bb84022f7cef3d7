"""What the gateway did: the audit log (``audit``: one JSON line per query, and the
per-key summary of ``movingtarget audit``) and the Prometheus metrics (``metrics``).
"""

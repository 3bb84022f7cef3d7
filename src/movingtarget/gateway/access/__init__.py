"""Who may query the gateway, and how much: API keys and their limits.

``base`` holds the shared types (key records, limits, grants, the
:class:`~movingtarget.gateway.access.base.KeyStore` protocol, token digests and the
refusals a store raises); ``keys`` opens a store from its URL
(:func:`~movingtarget.gateway.access.keys.open_keys`); ``keys_sqlite`` and
``keys_redis`` are the stores; ``limits`` is the token bucket and quota arithmetic;
``ids`` the request ids and the key-bound query ids.
"""

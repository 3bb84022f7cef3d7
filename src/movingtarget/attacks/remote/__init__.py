"""Attacking a live gateway over HTTP, as a real client would.

``client`` is the HTTP client of the gateway
(:class:`~movingtarget.attacks.remote.client.GatewayClient`, httpx); ``defense`` is a
live gateway seen as the arena's defense
(:class:`~movingtarget.attacks.remote.defense.RemoteDefense`); ``attack`` runs the
arena's adversaries against it (``movingtarget attack URL``:
:func:`~movingtarget.attacks.remote.attack.run_remote_attack`).

Nothing here imports the server side; importing :mod:`movingtarget.attacks` does not
import this package (its modules need the ``serve`` extra's httpx).
"""

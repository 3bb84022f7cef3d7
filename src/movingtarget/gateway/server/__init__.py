"""The gateway's HTTP server side.

``app`` builds the FastAPI application (:func:`~movingtarget.gateway.server.app.create_app`)
with its routes; ``http`` holds what every route shares (JSON routes, body reading,
problem responses), ``kserve`` the Open Inference Protocol (KServe v2) routes,
``schemas`` the request and response bodies, ``inputs`` the parsing and checking of
inputs against the served model's domain. ``service`` is the
:class:`~movingtarget.gateway.server.service.Gateway` behind the routes (authorize,
micro-batch with ``batching``, answer, audit), ``serving`` loads the served model and
``config`` is :class:`~movingtarget.gateway.server.config.GatewayConfig`, what
``movingtarget serve`` is given.
"""

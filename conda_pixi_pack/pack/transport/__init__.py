"""How ``pack`` fetches over the network: which client serves a URL, and how many at once.

- :mod:`~conda_pixi_pack.pack.transport.settings`: ``--auth-file``, ``--config`` and the timeouts;
- :mod:`~conda_pixi_pack.pack.transport.route`: the direct transport, or py-rattler's client
  (credentials, proxies, several mirrors, S3/GCS/OCI, webpki roots);
- :mod:`~conda_pixi_pack.pack.transport.direct`: plain HTTP(S) with ``http.client`` and OpenSSL
  in the fetching threads, hedged connects, kept-alive connections, resumed TLS sessions;
- :mod:`~conda_pixi_pack.pack.transport.rattler_client`: py-rattler's client, on an event loop
  of its own, for the rest;
- :mod:`~conda_pixi_pack.pack.transport.ramp`: per server, a few transfers first, more while it
  answers, fewer after a connection stalled.

``pack/download.py`` drives them (threads, attempts, verification, messages, the cache).
"""

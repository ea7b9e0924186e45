"""The wire contract between the planes, defined once and imported by both.

Nothing in here touches a database, a stream or the network: these are the shapes that
travel over Redis Streams and the worker callback API, plus the settings and identifiers
both planes have to agree on.
"""

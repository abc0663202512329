"""Encrypted store of a data site: envelope encryption, key providers, objects, catalog.

Import from the submodules (``echoscreen.store.site``, ``.objects``, ``.catalog``,
``.keys``, ``.crypto``); this package file imports nothing so that importing one
part does not pull in SQLAlchemy or the crypto backend.
"""

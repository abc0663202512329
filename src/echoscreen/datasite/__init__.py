"""The data server: serves de-identified clip tensors to authorised compute workloads.

Mutual TLS with the site's own CA (:mod:`.pki`, :mod:`.tls`), per-dataset grants
to tenants (:mod:`.access`), a key-release seam (:mod:`.attest`), request bounds
(:mod:`.limits`), a hash-chained audit log (:mod:`.audit`), the HTTP API
(:mod:`.app`, :mod:`.guard`, wire formats in :mod:`.wire`) and the process
(:mod:`.server`). Import from the submodules; this file imports nothing.
"""

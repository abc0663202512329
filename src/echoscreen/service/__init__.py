"""The production screening service (``echoscreen serve``): API, web page, DICOM in and out.

Modules (import from them directly; this package exports nothing by itself):

* ``config``: :class:`ServiceConfig`, the one settings object of the service process;
* ``engine``: the in-memory pipeline: de-identify, decode and preprocess in a CPU pool,
  micro-batched inference (``batching``), jobs (``jobs``), explanations (``explain``);
* ``app``: the FastAPI application (uploads, tokens, metrics, the web page in ``web/``);
* ``scp``, ``sr``, ``pacs``: C-STORE SCP, Comprehensive SR results, STOW-RS.

See docs/service.md.
"""

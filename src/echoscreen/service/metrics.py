"""Prometheus metrics of one service process, in their own registry (no global state)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

#: request latency buckets (s)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: batch size buckets (clips or studies per inference call)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class Metrics:
    """The service's metrics.

    Attributes:
        registry: the collector registry :meth:`render` exposes.
        request_latency: HTTP request seconds (labels route, method, status).
        queue_depth: jobs waiting to start.
        in_flight: jobs being screened.
        queued_bytes: bytes of studies held (accepted jobs not finished, uploads being read,
            instances of open DICOM associations).
        scp_refused: C-STORE requests the SCP answered 0xA700 (out of resources).
        batch_size: rows per inference call (label model: "view" clips, "rhd" studies).
        decisions: finished studies by decision (screen-positive, normal, inconclusive).
        jobs: finished jobs by status (done, failed, interrupted).
        model_info: 1, labelled with the served model and backend.
        sr_outbox: SRs waiting in memory for the PACS; sr_dropped: SRs dropped because
            the outbox was full.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_latency = Histogram(
            "echoscreen_request_seconds", "HTTP request latency in seconds",
            ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge("echoscreen_queue_depth", "jobs waiting to start", registry=r)
        self.in_flight = Gauge("echoscreen_in_flight", "jobs being screened", registry=r)
        self.queued_bytes = Gauge(
            "echoscreen_queued_bytes",
            "bytes of studies held (jobs not finished, uploads and associations being received)",
            registry=r,
        )  # fmt: skip
        self.scp_refused = Counter(
            "echoscreen_scp_out_of_resources",
            "C-STORE requests answered 0xA700 (out of resources): the bytes held would pass "
            "a bound",
            registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "echoscreen_batch_size", "rows per inference call (view: clips, rhd: studies)",
            ["model"], buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.decisions = Counter("echoscreen_decisions", "screened studies by decision",
                                 ["decision"], registry=r)  # fmt: skip
        self.jobs = Counter("echoscreen_jobs", "finished jobs by status", ["status"], registry=r)
        self.sr_outbox = Gauge("echoscreen_sr_outbox", "SRs waiting in memory for the PACS",
                               registry=r)  # fmt: skip
        self.sr_dropped = Counter("echoscreen_sr_dropped", "SRs dropped: the outbox was full",
                                  registry=r)  # fmt: skip
        self.model_info = Gauge("echoscreen_model_info", "the served model (value 1)",
                                ["model", "backend"], registry=r)  # fmt: skip

    def set_model(self, model: str, backend: str) -> None:
        """Record the served ``model`` ("NAME:VERSION") and ``backend`` name."""
        self.model_info.clear()
        self.model_info.labels(model=model, backend=backend).set(1)

    def render(self) -> tuple[bytes, str]:
        """``(body, content type)`` of the Prometheus text exposition."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """Current value of sample ``name`` (e.g. ``echoscreen_batch_size_count``), or None."""
        value = self.registry.get_sample_value(name, labels or {})
        return None if value is None else float(value)

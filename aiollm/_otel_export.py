"""``export_spans``: global SDK providers that export to OTLP or the console (see :mod:`aiollm.otel`)."""

from __future__ import annotations

import os
from collections.abc import Callable

from opentelemetry import metrics, trace

__all__ = ["export_spans"]


def export_spans(to: str = "otlp", service_name: str = "aiollm") -> Callable[[], None]:
    """Set global SDK tracer and meter providers that export to ``to``; returns their shutdown.

    ``"otlp"`` sends spans and metrics over OTLP/HTTP (``opentelemetry-exporter-otlp-proto-http``;
    the ``OTEL_EXPORTER_OTLP_*`` variables set the endpoint), ``"console"`` prints them to
    stderr. Needs ``opentelemetry-sdk``. For ``aiollm bench --otel``, and handy in scripts.
    """
    import sys

    from opentelemetry.sdk.metrics import MeterProvider as SDKMeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricExporter,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    spans: SpanExporter
    measurements: MetricExporter
    if to == "console":
        spans = ConsoleSpanExporter(out=sys.stderr)
        measurements = ConsoleMetricExporter(out=sys.stderr)
    elif to == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        spans, measurements = OTLPSpanExporter(), OTLPMetricExporter()
    else:
        raise ValueError(f"export to 'otlp' or 'console', not {to!r}")
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    resource = Resource.create(attributes)
    tracer_provider = SDKTracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(spans))
    meter_provider = SDKMeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(measurements)]
    )
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)

    def shutdown() -> None:
        tracer_provider.shutdown()
        meter_provider.shutdown()

    return shutdown

// Package tracing sends vmb's OpenTelemetry spans where the user asks
// (vmb solve --trace): to an OTLP/HTTP collector (Jaeger speaks OTLP), or as JSON
// to a file. Off by default: the packages that make spans (solver, vmexec) use
// the otel API's global tracer, which without Start is a no-op that costs a
// context lookup a span.
package tracing

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Name is the instrumentation scope of vmb's spans.
const Name = "vmb.dev/vmb"

// Tracer is the tracer vmb's packages make spans with: the global provider's,
// so a no-op until Start.
func Tracer() trace.Tracer { return otel.Tracer(Name) }

// Start sends every span from now on to dest: an http:// or https:// URL is an
// OTLP/HTTP collector's traces endpoint (http://localhost:4318/v1/traces, or just
// the collector's http://localhost:4318), anything else a file that gets one
// JSON object a span. The returned function flushes what is buffered and stops;
// call it before the process ends.
func Start(ctx context.Context, dest, version string) (func(context.Context) error, error) {
	var exp sdktrace.SpanExporter
	var closeFile func() error
	if strings.HasPrefix(dest, "http://") || strings.HasPrefix(dest, "https://") {
		url := dest
		if !strings.Contains(strings.TrimPrefix(strings.TrimPrefix(url, "http://"), "https://"), "/") {
			url += "/v1/traces"
		}
		e, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(url))
		if err != nil {
			return nil, fmt.Errorf("--trace %s: %w", dest, err)
		}
		exp = e
	} else {
		f, err := os.Create(dest)
		if err != nil {
			return nil, fmt.Errorf("--trace: %w", err)
		}
		e, err := stdouttrace.New(stdouttrace.WithWriter(f))
		if err != nil {
			f.Close()
			return nil, err
		}
		exp, closeFile = e, f.Close
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "vmb"), attribute.String("service.version", version))))
	otel.SetTracerProvider(tp)
	return func(ctx context.Context) error {
		err := tp.Shutdown(ctx)
		if closeFile != nil {
			if cerr := closeFile(); err == nil {
				err = cerr
			}
		}
		return err
	}, nil
}

// End ends span, recording err (if any) as its status.
func End(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

package tracing_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	collector "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"vmb.dev/vmb/internal/tracing"
)

// spans sends a parent span with a child to dest, as a solve sends a node's and
// its phases', and stops tracing.
func spans(t *testing.T, dest string) {
	t.Helper()
	prev := otel.GetTracerProvider()
	t.Cleanup(func() { otel.SetTracerProvider(prev) })
	stop, err := tracing.Start(t.Context(), dest, "test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, parent := tracing.Tracer().Start(t.Context(), "job copy-in")
	_, child := tracing.Tracer().Start(ctx, "ingest")
	child.SetAttributes(attribute.Int64("vmb.read_bytes", 4096))
	child.End()
	parent.End()
	if err := stop(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// To a file: one JSON object a span, the child's parent the parent's span.
func TestFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.json")
	spans(t, path)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type span struct {
		Name        string
		SpanContext struct{ SpanID string }
		Parent      struct{ SpanID string }
	}
	got := map[string]span{}
	dec := json.NewDecoder(bufio.NewReader(f))
	for {
		var s span
		if err := dec.Decode(&s); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		got[s.Name] = s
	}
	p, c := got["job copy-in"], got["ingest"]
	if p.SpanContext.SpanID == "" || c.Parent.SpanID != p.SpanContext.SpanID {
		t.Errorf("spans %+v: want ingest a child of job copy-in", got)
	}
}

// To an OTLP/HTTP receiver on 127.0.0.1, which decodes what it is sent as the
// collector would.
func TestOTLP(t *testing.T) {
	var mu sync.Mutex
	var names []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req collector.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					names = append(names, s.Name)
				}
			}
		}
		mu.Unlock()
		b, _ := proto.Marshal(&collector.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(b)
	}))
	defer srv.Close()
	spans(t, srv.URL) // the collector's address: /v1/traces is added
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(names)
	if !slices.Equal(names, []string{"ingest", "job copy-in"}) {
		t.Errorf("the receiver got spans %q", names)
	}
}

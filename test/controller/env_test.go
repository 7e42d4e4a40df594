package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/driver"
	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

// envOptions shape one test's fake GCS and controller.
type envOptions struct {
	objects []fakestorage.Object
	// keepLabels puts labelStore in front of fake-gcs-server, which drops
	// bucket labels: the fake then keeps them as GCS does.
	keepLabels bool
	// marker runs the controller with --bucket-label-marker.
	marker bool
	// prefix is --bucket-name-prefix.
	prefix string
	// anonymous runs the controller with --anonymous (default true, for
	// the plain fake); false with a front that checks credentials.
	credentialed bool
	// front wraps the fake (after the label store and the gate), e.g. the
	// auth front of test/fakegcp.
	front func(http.Handler) http.Handler
}

// env is a fake GCS and the real CSI controller service (in-process, the
// code `gcsfuse-csi controller` runs) over its unix socket.
type env struct {
	gcs    *harness.FakeGCS
	labels *labelStore
	gate   *deleteGate
	ctrl   csi.ControllerClient
	ident  csi.IdentityClient
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	e := &env{gate: &deleteGate{}}
	if o.keepLabels {
		e.labels = &labelStore{labels: map[string]map[string]string{}}
	}
	wrap := func(h http.Handler) http.Handler {
		if e.labels != nil {
			h = e.labels.wrap(h)
		}
		h = e.gate.wrap(h)
		if o.front != nil {
			h = o.front(h)
		}
		return h
	}
	gcs, err := harness.StartFakeGCSWrapped(o.objects, wrap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gcs.Stop)
	e.gcs = gcs
	t.Cleanup(e.gate.open)

	// Unix socket paths are short: not under t.TempDir's long name.
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	endpoint := "unix://" + filepath.Join(dir, "csi.sock")
	c, err := driver.NewController(driver.ControllerOptions{
		Endpoint:          endpoint,
		DriverName:        driver.DefaultDriverName,
		GCSEndpoint:       gcs.Endpoint,
		Anonymous:         !o.credentialed,
		BucketNamePrefix:  o.prefix,
		BucketLabelMarker: o.marker,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller Run: %v", err)
		}
	})
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.ctrl, e.ident = csi.NewControllerClient(conn), csi.NewIdentityClient(conn)
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, pcancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := e.ident.Probe(pctx, &csi.ProbeRequest{})
		pcancel()
		if err == nil && resp.GetReady().GetValue() {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("controller not ready: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// objects lists the names under prefix in bucket (nil if the bucket is
// gone), through the client that bypasses the fronts.
func (e *env) objects(t *testing.T, bucket, prefix string) []string {
	t.Helper()
	var out []string
	it := e.gcs.Client.Bucket(bucket).Objects(context.Background(), &storage.Query{Prefix: prefix})
	for {
		o, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out
		}
		if errors.Is(err, storage.ErrBucketNotExist) {
			return nil
		}
		if err != nil {
			t.Fatalf("list gs://%s/%s: %v", bucket, prefix, err)
		}
		out = append(out, o.Name)
	}
}

func (e *env) bucketExists(t *testing.T, bucket string) bool {
	t.Helper()
	_, err := e.gcs.Client.Bucket(bucket).Attrs(context.Background())
	if errors.Is(err, storage.ErrBucketNotExist) {
		return false
	}
	if err != nil {
		t.Fatalf("bucket %s: %v", bucket, err)
	}
	return true
}

// metadata returns an object's metadata, or nil if it does not exist.
func (e *env) metadata(t *testing.T, bucket, object string) map[string]string {
	t.Helper()
	a, err := e.gcs.Client.Bucket(bucket).Object(object).Attrs(context.Background())
	if errors.Is(err, storage.ErrObjectNotExist) || errors.Is(err, storage.ErrBucketNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("gs://%s/%s: %v", bucket, object, err)
	}
	if a.Metadata == nil {
		return map[string]string{}
	}
	return a.Metadata
}

func (e *env) put(t *testing.T, bucket, object, content string, metadata map[string]string) {
	t.Helper()
	w := e.gcs.Client.Bucket(bucket).Object(object).NewWriter(context.Background())
	w.Metadata = metadata
	if _, err := io.WriteString(w, content); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("write gs://%s/%s: %v", bucket, object, err)
	}
}

// labelStore makes fake-gcs-server keep bucket labels, as GCS does: it
// records the labels of every bucket created (POST /storage/v1/b) or
// patched, adds them to every bucket resource the fake returns, and forgets
// them when the bucket is deleted. The fake itself drops them.
type labelStore struct {
	mu     sync.Mutex
	labels map[string]map[string]string
}

func (s *labelStore) get(bucket string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for k, v := range s.labels[bucket] {
		out[k] = v
	}
	return out
}

func (s *labelStore) set(bucket string, labels map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.labels[bucket] = labels
}

func (s *labelStore) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/storage/v1/b")
		bucket := strings.Trim(rest, "/")
		if !ok || strings.Contains(bucket, "/") {
			next.ServeHTTP(w, r) // objects, uploads, ...
			return
		}
		var body struct {
			Name   string             `json:"name"`
			Labels map[string]*string `json:"labels"`
		}
		if r.Method == http.MethodPost || r.Method == http.MethodPatch {
			b, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(b))
			_ = json.Unmarshal(b, &body)
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		ok2xx := rec.Code/100 == 2
		switch {
		case ok2xx && r.Method == http.MethodPost && bucket == "":
			bucket = body.Name
			labels := map[string]string{}
			for k, v := range body.Labels {
				if v != nil {
					labels[k] = *v
				}
			}
			s.set(bucket, labels)
		case ok2xx && r.Method == http.MethodPatch:
			labels := s.get(bucket)
			for k, v := range body.Labels {
				if v == nil {
					delete(labels, k)
				} else {
					labels[k] = *v
				}
			}
			s.set(bucket, labels)
		case ok2xx && r.Method == http.MethodDelete:
			s.mu.Lock()
			delete(s.labels, bucket)
			s.mu.Unlock()
		}
		out := rec.Body.Bytes()
		if ok2xx && bucket != "" && r.Method != http.MethodDelete {
			var resource map[string]any
			if json.Unmarshal(out, &resource) == nil {
				if labels := s.get(bucket); len(labels) > 0 {
					resource["labels"] = labels
				}
				out, _ = json.Marshal(resource)
			}
		}
		for k, v := range rec.Header() {
			if k != "Content-Length" {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(rec.Code)
		w.Write(out)
	})
}

// deleteGate lets the first `after` object deletions through and holds
// every later one until release (or until its caller gives up): a
// DeleteVolume that is cut off half-way, deterministically.
type deleteGate struct {
	mu      sync.Mutex
	armed   bool
	after   int64
	seen    atomic.Int64
	passed  atomic.Int64
	lists   atomic.Int64 // object list requests
	opened  chan struct{}
	release func()
}

// arm starts counting: after n more object deletions, hold the rest.
func (g *deleteGate) arm(n int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed, g.after = true, n
	g.seen.Store(0)
	g.passed.Store(0)
	ch := make(chan struct{})
	g.opened = ch
	var once sync.Once
	g.release = func() { once.Do(func() { close(ch) }) }
}

func (g *deleteGate) wrap(next http.Handler) http.Handler {
	g.release = func() {}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/o") {
			g.lists.Add(1)
		}
		if r.Method == http.MethodDelete && strings.Contains(r.URL.Path, "/o/") {
			g.mu.Lock()
			armed, after, opened := g.armed, g.after, g.opened
			g.mu.Unlock()
			if armed && g.seen.Add(1) > after {
				select {
				case <-opened:
				case <-r.Context().Done():
					return // the caller gave up: nothing was deleted
				}
			}
			g.passed.Add(1)
		}
		next.ServeHTTP(w, r)
	})
}

// open lets everything through from now on.
func (g *deleteGate) open() {
	g.mu.Lock()
	release := g.release
	g.armed = false
	g.mu.Unlock()
	release()
}

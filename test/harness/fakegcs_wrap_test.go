package harness

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"
)

// The wrapper sees every request to Endpoint, and none of Client's: Client
// can set up and check objects, a resumable upload included, while the
// wrapper refuses everything.
func TestStartFakeGCSWrappedClientBypassesWrap(t *testing.T) {
	var seen atomic.Int32
	denyAll := func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen.Add(1)
			http.Error(w, "denied", http.StatusForbidden)
		})
	}
	f, err := StartFakeGCSWrapped([]fakestorage.Object{Object("bkt", "a.txt", "a")}, denyAll)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Bigger than one chunk: a resumable upload, whose session URL the fake
	// hands back on Endpoint's host.
	big := bytes.Repeat([]byte("0123456789abcdef"), 40<<10) // 640 KiB
	w := f.Client.Bucket("bkt").Object("big").NewWriter(ctx)
	w.ChunkSize = 256 << 10
	if _, err := w.Write(big); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("resumable upload through Client: %v", err)
	}
	r, err := f.Client.Bucket("bkt").Object("big").NewReader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("read back %d bytes (%v), want %d", len(got), err, len(big))
	}
	if n := seen.Load(); n != 0 {
		t.Fatalf("the wrapper saw %d of Client's requests, want none", n)
	}

	resp, err := http.Get(f.Endpoint + "b/bkt/o")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || seen.Load() != 1 {
		t.Fatalf("request to Endpoint: %d, wrapper saw %d; want the wrapper's 403", resp.StatusCode, seen.Load())
	}
}

package harness

import (
	"bytes"
	"flag"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"

	"k8s.io/klog/v2"
)

// LogBuffer collects klog's output of an in-process driver.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything logged so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Tail returns the last n lines logged.
func (b *LogBuffer) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// CaptureKlog sends klog's output at verbosity v to a buffer until the test
// ends, then restores klog's defaults (stderr, -v=0).
func CaptureKlog(t *testing.T, v int) *LogBuffer {
	t.Helper()
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	for name, value := range map[string]string{"logtostderr": "false", "alsologtostderr": "false", "stderrthreshold": "FATAL", "v": strconv.Itoa(v)} {
		if err := fs.Set(name, value); err != nil {
			t.Fatal(err)
		}
	}
	b := &LogBuffer{}
	// The INFO writer receives every severity once.
	klog.SetOutput(io.Discard)
	klog.SetOutputBySeverity("INFO", b)
	t.Cleanup(func() {
		klog.Flush()
		_ = fs.Set("logtostderr", "true")
		_ = fs.Set("v", "0")
	})
	return b
}

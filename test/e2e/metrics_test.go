package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMetrics publishes a real volume with --metrics-address, reads a file,
// and scrapes /metrics: the driver's own metrics (CSI calls by method and
// code, mounts, gcsfuse processes, volume health, mount latency) and
// gcsfuse's, relabelled with the bucket and session. gcsfuse pushes its
// metrics every 5 s, so the scrape is repeated until they have arrived.
// Neither gcsfuse nor the mounter may listen on anything but loopback.
func TestMetrics(t *testing.T) {
	addr := freeLoopbackAddr(t)
	e := newEnvWith(t, envConfig{anonymous: true, driverArgs: []string{"--metrics-address=" + addr}})
	stage, target := e.path("stage"), e.path("target")
	e.mustStage(t, bucket, stage, rwx, nil)
	e.mustPublish(t, persistent(bucket, stage, target, rwx, false))
	if got, err := os.ReadFile(filepath.Join(target, "top.txt")); err != nil || string(got) != fixture["top.txt"] {
		t.Fatalf("read top.txt = %q, %v", got, err)
	}

	var m scrape
	deadline := time.Now().Add(30 * time.Second)
	for {
		m = scrapeMetrics(t, "http://"+addr+"/metrics")
		if m.has("gcsfuse_fs_ops_count", nil) || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}

	atLeast := func(name string, labels map[string]string, min float64) {
		t.Helper()
		if v, ok := m.value(name, labels); !ok || v < min {
			t.Errorf("%s%v = %v (found %t), want >= %v", name, labels, v, ok, min)
		}
	}
	equal := func(name string, labels map[string]string, want float64) {
		t.Helper()
		if v, ok := m.value(name, labels); !ok || v != want {
			t.Errorf("%s%v = %v (found %t), want %v", name, labels, v, ok, want)
		}
	}
	atLeast("gcsfuse_csi_rpc_total", map[string]string{"method": "NodeStageVolume", "code": "OK"}, 1)
	atLeast("gcsfuse_csi_rpc_total", map[string]string{"method": "NodePublishVolume", "code": "OK"}, 1)
	atLeast("gcsfuse_csi_rpc_duration_seconds_count", map[string]string{"method": "NodePublishVolume", "code": "OK"}, 1)
	// The mount table is the host's: tests running alongside add theirs.
	atLeast("gcsfuse_csi_mounts", map[string]string{"kind": "session"}, 1)
	atLeast("gcsfuse_csi_mounts", map[string]string{"kind": "bind"}, 1)
	equal("gcsfuse_csi_gcsfuse_processes", map[string]string{"state": "running"}, 1)
	equal("gcsfuse_csi_daemon_up", nil, 1)
	equal("gcsfuse_csi_volume_healthy", map[string]string{"bucket": bucket, "path": stage}, 1)
	equal("gcsfuse_csi_mount_duration_seconds_count", map[string]string{"result": "success"}, 1)
	equal("gcsfuse_csi_gcsfuse_deaths_total", nil, 0)
	equal("gcsfuse_csi_gcsfuse_restarts_total", nil, 0)
	atLeast("go_goroutines", nil, 1)
	atLeast("process_resident_memory_bytes", nil, 1)
	// gcsfuse's own, from the mounter, with the session's labels.
	atLeast("gcsfuse_fs_ops_count", map[string]string{"bucket": bucket}, 1)
	if !m.hasLabel("gcsfuse_fs_ops_count", "session") {
		t.Errorf("gcsfuse_fs_ops_count has no session label:\n%s", m.lines("gcsfuse_fs_ops_count"))
	}
	if t.Failed() {
		t.Logf("scraped (gcsfuse_*):\n%s", m.lines("gcsfuse_"))
	}

	// gcsfuse opens no port; the mounter's receivers are on loopback only.
	for _, pid := range e.gcsfuse(t) {
		if l := listeners(t, pid); len(l) != 0 {
			t.Errorf("gcsfuse (pid %d) listens on %v; want no TCP listener", pid, l)
		}
	}
	l := listeners(t, e.mnt.Pid())
	if len(l) == 0 {
		t.Errorf("the mounter (pid %d) has no metrics receiver listening", e.mnt.Pid())
	}
	for _, a := range l {
		if !strings.HasPrefix(a, "127.0.0.1:") {
			t.Errorf("the mounter (pid %d) listens on %s; want 127.0.0.1 only", e.mnt.Pid(), a)
		}
	}
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// scrape is a text exposition: series (name{labels}) to value.
type scrape map[string]float64

func scrapeMetrics(t *testing.T, url string) scrape {
	t.Helper()
	c := http.Client{Timeout: 15 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	m := scrape{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		m[line[:i]] = v
	}
	return m
}

// parseSeries splits name{a="b",c="d"} (values without commas or quotes).
func parseSeries(s string) (string, map[string]string) {
	name, rest, ok := strings.Cut(s, "{")
	labels := map[string]string{}
	if !ok {
		return name, labels
	}
	for _, kv := range strings.Split(strings.TrimSuffix(rest, "}"), ",") {
		k, v, _ := strings.Cut(kv, "=")
		labels[k] = strings.Trim(v, `"`)
	}
	return name, labels
}

// value sums the series of name whose labels include want.
func (m scrape) value(name string, want map[string]string) (float64, bool) {
	sum, found := 0.0, false
	for s, v := range m {
		n, labels := parseSeries(s)
		if n != name {
			continue
		}
		match := true
		for k, w := range want {
			if labels[k] != w {
				match = false
			}
		}
		if match {
			sum, found = sum+v, true
		}
	}
	return sum, found
}

func (m scrape) has(name string, want map[string]string) bool {
	_, ok := m.value(name, want)
	return ok
}

func (m scrape) hasLabel(name, label string) bool {
	for s := range m {
		if n, labels := parseSeries(s); n == name && labels[label] != "" {
			return true
		}
	}
	return false
}

func (m scrape) lines(prefix string) string {
	var b strings.Builder
	for s, v := range m {
		if strings.HasPrefix(s, prefix) {
			fmt.Fprintf(&b, "%s %v\n", s, v)
		}
	}
	return b.String()
}

// listeners returns the local addresses of pid's listening TCP sockets.
func listeners(t *testing.T, pid int) []string {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	var out []string
	for _, file := range []string{"tcp", "tcp6"} {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, file))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(raw), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] {
				continue
			}
			out = append(out, hexAddr(f[1]))
		}
	}
	return out
}

// hexAddr decodes /proc/net/tcp's 0100007F:1F90 (IPv4; IPv6 stays hex).
func hexAddr(s string) string {
	ip, port, _ := strings.Cut(s, ":")
	p, _ := strconv.ParseUint(port, 16, 16)
	if len(ip) != 8 {
		return fmt.Sprintf("[%s]:%d", ip, p)
	}
	var b [4]byte
	for i := range 4 {
		v, _ := strconv.ParseUint(ip[2*i:2*i+2], 16, 8)
		b[3-i] = byte(v)
	}
	return fmt.Sprintf("%d.%d.%d.%d:%d", b[0], b[1], b[2], b[3], p)
}

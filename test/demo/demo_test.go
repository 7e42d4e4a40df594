package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

func requireRootAndFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the demo needs root: it mounts FUSE filesystems and bind mounts")
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("the demo needs /dev/fuse: %v", err)
	}
	f.Close()
}

// assertDemoOutput checks what a user sees: the listing of every level of
// the sample bucket, the shown file's content, and a clean exit.
func assertDemoOutput(t *testing.T, out, target string) {
	t.Helper()
	for _, want := range []string{
		target + ":\n",
		target + "/notes:\n",
		target + "/notes/archive:\n",
		"$ cat " + filepath.Join(target, showFile) + "\n" + string(objects[0].Content),
		"unpublish  NodeUnpublishVolume ok",
		"unstage    NodeUnstageVolume ok",
		"nothing left mounted",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, re := range []string{
		`(?m)^-rw-r--r-- .* 242 .* README\.md$`,
		`(?m)^drwxr-xr-x .* notes$`,
		`(?m)^drwxr-xr-x .* archive$`,
		`(?m)^-rw-r--r-- .* ideas\.txt$`,
		`(?m)^-rw-r--r-- .* todo\.txt$`,
		`(?m)^-rw-r--r-- .* 2024\.txt$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("listing lacks a line matching %s", re)
		}
	}
	if m := regexp.MustCompile(`driver +pid (\d+) stopped`).FindStringSubmatch(out); m == nil {
		t.Errorf("output does not say the driver stopped")
	} else if pid, _ := strconv.Atoi(m[1]); pid > 0 {
		if _, err := os.Stat("/proc/" + m[1]); !os.IsNotExist(err) {
			t.Errorf("driver pid %d still exists after the demo", pid)
		}
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", out)
	}
}

func assertNothingMounted(t *testing.T, dir string) {
	t.Helper()
	if mounts, err := harness.DetachAll(dir); err != nil || len(mounts) != 0 {
		t.Errorf("left mounted under %s: %+v (%v)", dir, mounts, err)
	}
}

// TestOnce runs the demo's logic in -once mode with -dir.
func TestOnce(t *testing.T) {
	requireRootAndFUSE(t)
	dir := t.TempDir()
	t.Cleanup(func() { assertNothingMounted(t, dir) }) // runs before TempDir's removal
	var out bytes.Buffer
	if err := run(config{once: true, dir: dir}, &out, nil); err != nil {
		t.Fatalf("run: %v\noutput:\n%s", err, out.String())
	}
	assertDemoOutput(t, out.String(), filepath.Join(dir, "mnt"))
	assertNothingMounted(t, dir)
	if _, err := os.Stat(filepath.Join(dir, "driver.log")); err != nil {
		t.Errorf("-dir: the driver log should be kept there: %v", err)
	}
}

// TestCtrlC builds the demo as `make demo` runs it, waits for its prompt,
// reads the mount from this process (another shell), then sends SIGINT to
// its whole process group as a terminal's Ctrl-C does.
func TestCtrlC(t *testing.T) {
	requireRootAndFUSE(t)
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go command not found: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "demo")
	build := exec.Command(goBin, "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin) // default -dir: a temp dir the demo removes
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	target := ""
	mountLine := regexp.MustCompile(`^    (/\S+)$`)
	for prompt := false; !prompt; {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("the demo exited before its prompt: %v\n%s", cmd.Wait(), out.String())
			}
			out.WriteString(line + "\n")
			if m := mountLine.FindStringSubmatch(line); m != nil {
				target = m[1]
			}
			prompt = strings.HasPrefix(line, "Press Ctrl-C")
		case <-ctx.Done():
			t.Fatalf("no prompt after 90s:\n%s", out.String())
		}
	}
	if target == "" {
		t.Fatalf("the demo did not print the mount path:\n%s", out.String())
	}
	dir := filepath.Dir(target)
	t.Cleanup(func() { assertNothingMounted(t, dir) })

	// The mount is browsable from elsewhere while the demo waits.
	if got, err := os.ReadFile(filepath.Join(target, "notes/todo.txt")); err != nil || string(got) != string(objects[1].Content) {
		t.Errorf("read notes/todo.txt from another process = %q, %v", got, err)
	}

	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for line := range lines {
		out.WriteString(line + "\n")
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("the demo exited with %v after Ctrl-C, want 0", err)
	}
	assertDemoOutput(t, out.String(), target)
	assertNothingMounted(t, dir)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the demo's temp dir %s is still there: %v", dir, err)
	}
}

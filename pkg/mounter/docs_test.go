package mounter

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// section returns the README text between <!-- name:begin --> and :end.
func section(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i, j := strings.Index(s, "<!-- "+name+":begin -->"), strings.Index(s, "<!-- "+name+":end -->")
	if i < 0 || j < i {
		t.Fatalf("README.md has no %s section", name)
	}
	return s[i:j]
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

// TestReadmeAttributesMatchAllowList keeps the README's attribute table
// equal to the allow-list: same attributes, each with its gcsfuse flag.
func TestReadmeAttributesMatchAllowList(t *testing.T) {
	rows := map[string]string{}
	for _, line := range strings.Split(section(t, "attributes"), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 {
			continue
		}
		if m := codeSpan.FindStringSubmatch(cells[1]); m != nil {
			rows[m[1]] = cells[2]
		}
	}
	for _, name := range AttributeNames() {
		if _, ok := rows[name]; !ok {
			t.Errorf("README attribute table lacks %q", name)
		}
		delete(rows, name)
	}
	for name := range rows {
		t.Errorf("README documents attribute %q that the driver does not accept", name)
	}
	for _, s := range allowList {
		if s.attr == "" {
			continue
		}
		if !strings.Contains(section(t, "attributes"), "| `"+s.attr+"` | `--"+s.flag+"` |") {
			t.Errorf("README row for %s does not name --%s", s.attr, s.flag)
		}
	}
}

// TestReadmeOptionsMatchAllowList keeps the mount-option lists true.
func TestReadmeOptionsMatchAllowList(t *testing.T) {
	text := section(t, "options")
	allowedText, rejectedText, _ := strings.Cut(text, "Rejected")
	var documented []string
	for _, m := range codeSpan.FindAllStringSubmatch(allowedText, -1) {
		documented = append(documented, m[1])
	}
	for _, name := range MountOptionNames() {
		if !slices.Contains(documented, name) {
			t.Errorf("README does not list allowed mount option %q", name)
		}
	}
	for name := range denied {
		if !strings.Contains(rejectedText, "`"+name+"`") {
			t.Errorf("README does not list rejected option %q", name)
		}
	}
	for _, m := range codeSpan.FindAllStringSubmatch(rejectedText, -1) {
		if _, ok := denied[m[1]]; !ok {
			t.Errorf("README lists %q as rejected, the code does not deny it", m[1])
		}
	}
}

package controller

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestReadmeParametersTable keeps the README's StorageClass parameter
// table equal to the controller's own parameters.
func TestReadmeParametersTable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- parameters:begin -->")
	table, _, ok2 := strings.Cut(rest, "<!-- parameters:end -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no parameters section")
	}
	row := regexp.MustCompile("(?m)^\\| `([A-Za-z]+)` \\|")
	var documented []string
	for _, m := range row.FindAllStringSubmatch(table, -1) {
		documented = append(documented, m[1])
	}
	slices.Sort(documented)
	if !slices.Equal(documented, Parameters) {
		t.Errorf("README parameter rows %v, the controller's parameters %v", documented, Parameters)
	}
	for name := range notPassedThrough {
		if !strings.Contains(table, "`"+name+"`") {
			t.Errorf("README parameters table does not say that %s is not passed on", name)
		}
	}
}

package chart

import (
	"encoding/json"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestReadmeValuesTable keeps the chart README's values table true: every
// key of values.yaml has a row with its default, and every row names a key
// that exists. A key is a leaf of values.yaml, or a map whose schema is a
// shared definition (a Kubernetes type such as resources or nodeSelector) or
// has no properties: such a map gets one row, with the whole map as default.
func TestReadmeValuesTable(t *testing.T) {
	var values map[string]any
	if err := yaml.Unmarshal(readFile(t, chartDir+"/values.yaml"), &values); err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(readFile(t, chartDir+"/values.schema.json"), &schema); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{}
	valueKeys(t, schema, schema, "", values, want)

	rows := readmeRows(t, string(readFile(t, chartDir+"/README.md")))
	for key, def := range rows {
		v, ok := want[key]
		if !ok {
			t.Errorf("README row %q: no such key in values.yaml", key)
			continue
		}
		var got any
		if err := json.Unmarshal([]byte(def), &got); err != nil {
			t.Errorf("README row %q: default `%s` is not JSON: %v", key, def, err)
			continue
		}
		if !reflect.DeepEqual(got, v) {
			js, _ := json.Marshal(v)
			t.Errorf("README row %q: default `%s`, values.yaml has `%s`", key, def, js)
		}
	}
	var missing []string
	for key, v := range want {
		if _, ok := rows[key]; !ok {
			js, _ := json.Marshal(v)
			missing = append(missing, "| `"+key+"` | `"+string(js)+"` | ... |")
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("values.yaml keys missing from the README's values table:\n%s", strings.Join(missing, "\n"))
	}
	if len(want) < 20 {
		t.Errorf("only %d keys found in values.yaml; the walk is broken", len(want))
	}
}

// valueKeys collects the table keys of v (at path prefix) into out.
func valueKeys(t *testing.T, root, node map[string]any, prefix string, v any, out map[string]any) {
	t.Helper()
	_, shared := node["$ref"]
	node = resolve(t, root, node)
	m, isMap := v.(map[string]any)
	props, described := node["properties"].(map[string]any)
	if !isMap || !described || shared {
		if prefix == "" {
			t.Fatal("values.yaml is not a map the schema describes")
		}
		out[prefix] = v
		return
	}
	for k, sub := range m {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		ps, ok := props[k].(map[string]any)
		if !ok {
			t.Errorf("values.yaml key %q is not in values.schema.json", key)
			continue
		}
		valueKeys(t, root, ps, key, sub, out)
	}
}

// resolve follows a local "$ref": "#/definitions/name".
func resolve(t *testing.T, root, node map[string]any) map[string]any {
	t.Helper()
	ref, ok := node["$ref"].(string)
	if !ok {
		return node
	}
	name, ok := strings.CutPrefix(ref, "#/definitions/")
	defs, _ := root["definitions"].(map[string]any)
	target, found := defs[name].(map[string]any)
	if !ok || !found {
		t.Fatalf("schema $ref %q does not resolve", ref)
	}
	return resolve(t, root, target)
}

var readmeRow = regexp.MustCompile("^\\| `([^`]+)` \\| `([^`]*)` \\|")

// readmeRows returns key -> default (JSON) of the README's values table,
// between <!-- values:begin --> and <!-- values:end -->.
func readmeRows(t *testing.T, readme string) map[string]string {
	t.Helper()
	_, rest, ok := strings.Cut(readme, "<!-- values:begin -->")
	table, _, ok2 := strings.Cut(rest, "<!-- values:end -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no <!-- values:begin --> ... <!-- values:end --> table")
	}
	rows := map[string]string{}
	for i, line := range strings.Split(strings.TrimSpace(table), "\n") {
		line = strings.TrimSpace(line)
		if i < 2 { // header and separator
			if !strings.HasPrefix(line, "|") {
				t.Fatalf("values table line %d %q: want the table header", i+1, line)
			}
			continue
		}
		mt := readmeRow.FindStringSubmatch(line)
		if mt == nil {
			t.Errorf("values table line %q: want | `key` | `default as JSON` | description |", line)
			continue
		}
		if _, dup := rows[mt[1]]; dup {
			t.Errorf("values table: %q twice", mt[1])
		}
		rows[mt[1]] = mt[2]
	}
	return rows
}

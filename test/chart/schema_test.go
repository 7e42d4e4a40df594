package chart

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestSchemaRejectsBadValues: values.schema.json stops bad values before
// anything is rendered, and the error names the key. Each overlay is the
// default values with one mistake.
func TestSchemaRejectsBadValues(t *testing.T) {
	tests := []struct {
		name, values string
		want         string // the key the error must name
	}{
		{"relative kubeletDir", "kubeletDir: var/lib/kubelet", "/kubeletDir"},
		{"kubeletDir with trailing slash", "kubeletDir: /var/lib/kubelet/", "/kubeletDir"},
		{"kubeletDir with ..", "kubeletDir: /var/lib/../kubelet", "/kubeletDir"},
		{"kubeletDir root", "kubeletDir: /", "/kubeletDir"},
		{"empty kubeletDir", `kubeletDir: ""`, "/kubeletDir"},
		{"driverName with capitals and underscore", "driverName: GCS_Fuse", "/driverName"},
		{"driverName with a trailing dot", "driverName: gcsfuse.example.", "/driverName"},
		{"driverName over 63 characters", "driverName: " + strings.Repeat("a", 60) + ".com", "/driverName"},
		{"image pullPolicy", "image: {pullPolicy: Sometimes}", "/image/pullPolicy"},
		{"image tag with a space", "image: {tag: 'v1 2'}", "/image/tag"},
		{"registrar pullPolicy lower case", "registrar: {image: {pullPolicy: always}}", "/registrar/image/pullPolicy"},
		{"unknown registrar mode", "registrar: {mode: external}", "/registrar/mode"},
		{"registrar health port", "registrar: {healthPort: 70000}", "/registrar/healthPort"},
		{"negative verbosity", "driver: {logVerbosity: -1}", "/driver/logVerbosity"},
		{"verbosity as a string", "driver: {logVerbosity: high}", "/driver/logVerbosity"},
		{"zero retries", "driver: {maxRetryAttempts: 0}", "/driver/maxRetryAttempts"},
		{"too many retries", "driver: {maxRetryAttempts: 31}", "/driver/maxRetryAttempts"},
		{"fractional retries", "driver: {maxRetryAttempts: 2.5}", "/driver/maxRetryAttempts"},
		{"gcsEndpoint without a scheme", "driver: {gcsEndpoint: storage.googleapis.com}", "/driver/gcsEndpoint"},
		{"gcsEndpoint other scheme", "driver: {gcsEndpoint: 'ftp://x/'}", "/driver/gcsEndpoint"},
		{"anonymous as a string", "driver: {anonymous: 'yes'}", "/driver/anonymous"},
		{"extraArgs overriding the driver name", "driver: {extraArgs: [--driver-name=other]}", "/driver/extraArgs/0"},
		{"extraArgs overriding the endpoint", "driver: {extraArgs: [--mount-timeout=1m, -endpoint=unix:///x]}", "/driver/extraArgs/1"},
		{"extraArgs not a flag", "driver: {extraArgs: [node]}", "/driver/extraArgs/0"},
		{"metrics port 0", "metrics: {enabled: true, port: 0}", "/metrics/port"},
		{"metrics enabled as a string", "metrics: {enabled: 'yes'}", "/metrics/enabled"},
		{"extraArgs setting the metrics address", "driver: {extraArgs: [--metrics-address=:1]}", "/driver/extraArgs/0"},
		{"unknown top-level key (typo)", "kubeletdir: /var/lib/kubelet", "kubeletdir"},
		{"unknown driver key", "driver: {gcsEndPoint: http://x/}", "gcsEndPoint"},
		{"unknown node key", "node: {tolerance: []}", "tolerance"},
		{"updateStrategy type", "node: {updateStrategy: {type: Recreate}}", "/node/updateStrategy/type"},
		{"toleration operator", "node: {tolerations: [{operator: Exist}]}", "/node/tolerations/0"},
		{"toleration field", "node: {tolerations: [{operater: Exists}]}", "/node/tolerations/0"},
		{"resources key", "node: {resources: {request: {cpu: 1}}}", "/node/resources"},
		{"affinity key", "node: {affinity: {nodeAfinity: {}}}", "nodeAfinity"},
		{"resources quantity", "node: {resources: {limits: {memory: lots}}}", "/node/resources/limits/memory"},
		{"nodeSelector value", "node: {nodeSelector: {kubernetes.io/os: 1}}", "/node/nodeSelector/kubernetes.io~1os"},
		{"service account name", "node: {serviceAccount: {name: Bad_Name}}", "/node/serviceAccount/name"},
		{"liveness period", "node: {livenessProbe: {periodSeconds: 0}}", "/node/livenessProbe/periodSeconds"},
		{"imagePullSecrets as strings", "imagePullSecrets: [regcred]", "/imagePullSecrets/0"},
		{"hostNetwork as a string", "node: {hostNetwork: 'true'}", "/node/hostNetwork"},
		{"mounter enabled as a string", "mounter: {enabled: 'no'}", "/mounter/enabled"},
		{"mounter as root", "mounter: {uid: 0}", "/mounter/uid"},
		{"mounter uid negative", "mounter: {uid: -1}", "/mounter/uid"},
		{"relative mounter socketDir", "mounter: {socketDir: var/lib/gcsfuse-csi-mounter}", "/mounter/socketDir"},
		{"mounter socketDir with ..", "mounter: {socketDir: /var/lib/../x}", "/mounter/socketDir"},
		{"mounter socketDir too long for a unix socket", "mounter: {socketDir: /" + strings.Repeat("a", 94) + "}", "/mounter/socketDir"},
		{"mounter updateStrategy is not a value (always OnDelete)", "mounter: {updateStrategy: {type: RollingUpdate}}", "updateStrategy"},
		{"mounter liveness probe is not a value", "mounter: {livenessProbe: {periodSeconds: 10}}", "livenessProbe"},
		{"extraArgs overriding the mounter socket", "driver: {extraArgs: [--mounter-socket=/x/mounter.sock]}", "/driver/extraArgs/0"},
		{"extraArgs overriding the mounter uid", "driver: {extraArgs: [-mounter-uid=0]}", "/driver/extraArgs/0"},
		{"mounter extraArgs overriding the socket", "mounter: {extraArgs: [--socket=/x.sock]}", "/mounter/extraArgs/0"},
		{"mounter extraArgs overriding the work dir", "mounter: {extraArgs: [--v=9, -work-dir=/x]}", "/mounter/extraArgs/0"},
		{"mounter resources quantity", "mounter: {resources: {limits: {memory: lots}}}", "/mounter/resources/limits/memory"},
		{"unknown workloadIdentity key (typo)", "workloadIdentity: {enable: true}", "enable"},
		{"workloadIdentity audiences as a list", "workloadIdentity: {audiences: [a, b]}", "audiences"},
		{"workloadIdentity enabled as a string", "workloadIdentity: {enabled: 'true'}", "/workloadIdentity/enabled"},
		{"token lifetime under kubelet's 10 minutes", "workloadIdentity: {expirationSeconds: 599}", "/workloadIdentity/expirationSeconds"},
		{"token lifetime over 2^32 s", "workloadIdentity: {expirationSeconds: 4294967297}", "/workloadIdentity/expirationSeconds"},
		{"token lifetime with a unit", "workloadIdentity: {expirationSeconds: 1h}", "/workloadIdentity/expirationSeconds"},
		{"audience with a space", "workloadIdentity: {audience: 'my audience'}", "/workloadIdentity/audience"},
		{"provider with a space", "workloadIdentity: {provider: '//iam.googleapis.com/projects/1 2'}", "/workloadIdentity/provider"},
		{"stsEndpoint without a scheme", "workloadIdentity: {stsEndpoint: sts.googleapis.com/v1/token}", "/workloadIdentity/stsEndpoint"},
		{"iamCredentialsEndpoint other scheme", "workloadIdentity: {iamCredentialsEndpoint: 'grpc://iam'}", "/workloadIdentity/iamCredentialsEndpoint"},
		{"workloadIdentity as a boolean", "workloadIdentity: true", "/workloadIdentity"},
		{"unknown nodeCredentials key (typo)", "driver: {nodeCredentials: {secretname: gcs-key}}", "secretname"},
		{"nodeCredentials key file in values", "driver: {nodeCredentials: {keyFile: '{}'}}", "keyFile"},
		{"nodeCredentials secretName not a Secret name", "driver: {nodeCredentials: {secretName: GCS_Key}}", "/driver/nodeCredentials/secretName"},
		{"nodeCredentials at the top level", "nodeCredentials: {secretName: gcs-key}", "nodeCredentials"},
		{"extraArgs overriding the token audience", "driver: {extraArgs: [--token-audience=x]}", "/driver/extraArgs/0"},
		{"extraArgs overriding the STS endpoint", "driver: {extraArgs: [-sts-endpoint=http://x/]}", "/driver/extraArgs/0"},
		{"extraArgs overriding the provider", "driver: {extraArgs: [--workload-identity-provider=x]}", "/driver/extraArgs/0"},
		{"extraArgs overriding the IAM endpoint", "driver: {extraArgs: [--iam-credentials-endpoint=http://x/]}", "/driver/extraArgs/0"},
	}
	c := loadChart(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files, err := renderChart(c, parseValues(t, tc.values))
			if err == nil {
				t.Fatalf("values %q rendered (%d files), want a schema error", tc.values, len(files))
			}
			msg := err.Error()
			if !strings.Contains(msg, "values don't meet the specifications of the schema") {
				t.Errorf("error is not the schema's: %v", err)
			}
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error does not name %q:\n%v", tc.want, err)
			}
		})
	}
}

// TestSchemaAcceptsGoodValues: the schema is not simply stricter than the
// chart's own users; values at the edges of each rule pass.
func TestSchemaAcceptsGoodValues(t *testing.T) {
	c := loadChart(t)
	for _, values := range []string{
		"kubeletDir: /var/snap/microk8s/common/var/lib/kubelet",
		"driverName: gcs",
		"driverName: " + strings.Repeat("a", 59) + ".com",
		"driver: {maxRetryAttempts: 1, logVerbosity: 0}",
		"driver: {maxRetryAttempts: 30}",
		"driver: {gcsEndpoint: 'https://storage.example.com/storage/v1/'}",
		"driver: {gcsEndpoint: 'http://127.0.0.1:4443/storage/v1/'}",
		"driver: {extraArgs: [--mount-timeout=1m, --vmodule=mounter=5]}",
		"node: {resources: {requests: {cpu: 100m, memory: 1Gi}, limits: {memory: 2G}}}",
		"node: {tolerations: [{key: k, operator: Equal, value: v, effect: NoSchedule}]}",
		"node: {updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 10%}}}",
		"node: {affinity: {nodeAffinity: {}}}",
		"image: {tag: v0.2.0-rc.1, repository: registry.example.com:5000/mirror/gcsfuse-csi}",
		"mounter: {enabled: false}",
		"mounter: {uid: 1, socketDir: /" + strings.Repeat("a", 93) + "}",
		"mounter: {resources: {limits: {memory: 4Gi}}, extraArgs: [--vmodule=remote=5]}",
		"workloadIdentity: {enabled: true, audience: a, expirationSeconds: 600}",
		"workloadIdentity: {enabled: true, audience: 'https://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q', expirationSeconds: 4294967296}",
		"workloadIdentity: {enabled: true, audience: x.svc.id.goog, provider: 'identitynamespace:x.svc.id.goog:https://container.googleapis.com/v1/projects/x/locations/l/clusters/c'}",
		"workloadIdentity: {enabled: true, audience: a, stsEndpoint: 'http://127.0.0.1:8080/v1/token', iamCredentialsEndpoint: 'https://iam.example.com'}",
		"driver: {nodeCredentials: {secretName: gcs-key.v2}}",
	} {
		if _, err := renderChart(c, parseValues(t, values)); err != nil {
			t.Errorf("values %q: %v", values, err)
		}
	}
}

// TestSchemaClosesObjects: every object the schema describes key by key
// refuses unknown keys, so a misspelt value fails instead of being ignored.
func TestSchemaClosesObjects(t *testing.T) {
	var schema map[string]any
	if err := json.Unmarshal(readFile(t, chartDir+"/values.schema.json"), &schema); err != nil {
		t.Fatal(err)
	}
	var walk func(ptr string, node any)
	walk = func(ptr string, node any) {
		switch n := node.(type) {
		case map[string]any:
			if _, ok := n["properties"]; ok && n["additionalProperties"] != false {
				t.Errorf("schema %s: has properties but allows any other key (want additionalProperties: false)", ptr)
			}
			for k, v := range n {
				walk(ptr+"/"+k, v)
			}
		case []any:
			for _, v := range n {
				walk(ptr+"/[]", v)
			}
		}
	}
	walk("#", schema)
}

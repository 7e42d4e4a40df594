{{/* Chart name, at most 63 characters. */}}
{{- define "gcsfuse-csi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Object name prefix, at most 55 characters so that "<prefix>-node" and
"<prefix>-mounter" stay valid label values (63).
*/}}
{{- define "gcsfuse-csi.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "gcsfuse-csi.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "gcsfuse-csi.labels" -}}
helm.sh/chart: {{ include "gcsfuse-csi.chart" . }}
{{ include "gcsfuse-csi.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gcsfuse-csi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gcsfuse-csi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Name of the node driver pods' ServiceAccount. */}}
{{- define "gcsfuse-csi.nodeServiceAccount" -}}
{{- default (printf "%s-node" (include "gcsfuse-csi.fullname" .)) .Values.node.serviceAccount.name }}
{{- end }}

{{/*
The driver's directory under the kubelet dir: the CSI socket (csi.sock).
kubelet on the host reaches the socket at this path; the driver container
sees the same directory at /csi.
*/}}
{{- define "gcsfuse-csi.pluginDir" -}}
{{- printf "%s/plugins/%s" .Values.kubeletDir .Values.driverName }}
{{- end }}

{{/*
The driver's state dir (--state-dir): inline volumes' gcsfuse mounts live in
its inline/ subdir. Under the kubelet dir, so those mounts are made in the
host's mount namespace, and NOT under the plugin dir: a container that
starts while inline volumes are mounted (a replaced driver pod, the
registrar) gets the plugin dir at /csi with a copy of every mount below it.
Such a copy does not follow the host's unmount (no propagation), so it would
outlive the session as a dead FUSE mount, and the driver would see it as one
more user of the inline session.
*/}}
{{- define "gcsfuse-csi.stateDir" -}}
{{- printf "%s/plugins/%s-state" .Values.kubeletDir .Values.driverName }}
{{- end }}

{{/* The driver image, shared by the driver and mounter pods. */}}
{{- define "gcsfuse-csi.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
gcsfuse in the image. The driver runs it in-process (mounter.enabled=false)
or the mounter runs it: both get the same --gcsfuse.
*/}}
{{- define "gcsfuse-csi.gcsfuse" -}}
/usr/local/bin/gcsfuse
{{- end }}

{{/*
The mounter's unix socket: the driver's --mounter-socket and the mounter's
--socket. Both pods mount mounter.socketDir from the host at the same path.
*/}}
{{- define "gcsfuse-csi.mounterSocket" -}}
{{- printf "%s/mounter.sock" .Values.mounter.socketDir }}
{{- end }}

{{/*
The audience of the pods' service-account tokens with workloadIdentity
enabled: the CSIDriver's tokenRequests and the driver's --token-audience.
Rendering fails without one.
*/}}
{{- define "gcsfuse-csi.tokenAudience" -}}
{{- required "workloadIdentity.audience is required with workloadIdentity.enabled=true: the audience of the pods' service-account tokens, one the workload identity pool provider accepts (by default https://iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER)" .Values.workloadIdentity.audience }}
{{- end }}

{{/*
Where driver.nodeCredentials.secretName is mounted, read-only, in the driver
and mounter containers; GOOGLE_APPLICATION_CREDENTIALS names the key file
in it.
*/}}
{{- define "gcsfuse-csi.nodeCredentialsDir" -}}
/etc/gcsfuse-csi/node-credentials
{{- end }}

{{/*
The node credentials volume, for the pod specs of the driver and the
mounter. The key file is 0440: root (the driver) reads it as its owner, the
mounter through its group, which the mounter pod's fsGroup makes the
mounter's gid. No other uid can.
*/}}
{{- define "gcsfuse-csi.nodeCredentialsVolume" -}}
- name: node-credentials
  secret:
    secretName: {{ .Values.driver.nodeCredentials.secretName }}
    # Only key.json: a Secret without it keeps the pods from starting
    # (an event on the pod names the missing key).
    items:
      - key: key.json
        path: key.json
    defaultMode: 0440
{{- end }}

{{/* The node credentials mount and environment of a container. */}}
{{- define "gcsfuse-csi.nodeCredentialsMount" -}}
- name: node-credentials
  mountPath: {{ include "gcsfuse-csi.nodeCredentialsDir" . }}
  readOnly: true
{{- end }}

{{- define "gcsfuse-csi.nodeCredentialsEnv" -}}
- name: GOOGLE_APPLICATION_CREDENTIALS
  value: {{ include "gcsfuse-csi.nodeCredentialsDir" . }}/key.json
{{- end }}

{{/* Chart name, at most 63 characters. */}}
{{- define "gcsfuse-csi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Object name prefix, at most 55 characters so that "<prefix>-node" stays a
valid label value (63).
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
The driver's directory under the kubelet dir: the CSI socket (csi.sock) and
the driver's state dir live there. kubelet on the host reaches the socket at
this path; the driver container sees the same directory at /csi.
*/}}
{{- define "gcsfuse-csi.pluginDir" -}}
{{- printf "%s/plugins/%s" .Values.kubeletDir .Values.driverName }}
{{- end }}

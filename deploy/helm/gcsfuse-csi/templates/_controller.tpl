{{/* Name of the controller pods' ServiceAccount. */}}
{{- define "gcsfuse-csi.controllerServiceAccount" -}}
{{- default (printf "%s-controller" (include "gcsfuse-csi.fullname" .)) .Values.controller.serviceAccount.name }}
{{- end }}

{{/*
The controller pod's uid and gid: the image's nonroot user. Every container
of the pod runs as it, so the sidecars can use the socket the driver makes
on the shared emptyDir.
*/}}
{{- define "gcsfuse-csi.controllerUID" -}}
65532
{{- end }}

{{/*
Where the sidecars find the Kubernetes API credentials: the pod does not
mount its ServiceAccount token (automountServiceAccountToken: false), so
that the driver container, which holds GCS credentials, has no API token.
Only the sidecars mount this projected volume, at the path client-go reads
in-cluster configuration from.
*/}}
{{- define "gcsfuse-csi.apiAccessVolume" -}}
- name: kube-api-access
  projected:
    defaultMode: 0444
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                fieldPath: metadata.namespace
{{- end }}

{{- define "gcsfuse-csi.apiAccessMount" -}}
- name: kube-api-access
  mountPath: /var/run/secrets/kubernetes.io/serviceaccount
  readOnly: true
{{- end }}

{{/* The restricted securityContext of every controller container. */}}
{{- define "gcsfuse-csi.controllerContainerSecurity" -}}
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
{{- end }}

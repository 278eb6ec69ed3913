{{- define "idbridge.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "idbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "idbridge.labels" -}}
{{ include "idbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "idbridge.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "idbridge.fullname" .) -}}
{{- end -}}

{{- define "idbridge.scimTokensSecretName" -}}
{{- .Values.secrets.existingScimTokensSecret | default (printf "%s-scim-tokens" (include "idbridge.fullname" .)) -}}
{{- end -}}

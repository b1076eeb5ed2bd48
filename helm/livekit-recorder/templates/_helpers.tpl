{{/* Chart name, truncated to the 63 characters a label value may have. */}}
{{- define "livekit-recorder.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, with the chart name unless it already holds it. */}}
{{- define "livekit-recorder.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "livekit-recorder.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "livekit-recorder.selectorLabels" -}}
app.kubernetes.io/name: {{ include "livekit-recorder.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "livekit-recorder.labels" -}}
helm.sh/chart: {{ include "livekit-recorder.chart" . }}
{{ include "livekit-recorder.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "livekit-recorder.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "livekit-recorder.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the config YAML, and its key. */}}
{{- define "livekit-recorder.secretName" -}}
{{- default (include "livekit-recorder.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "livekit-recorder.secretKey" -}}
{{- if .Values.existingSecret }}{{ .Values.existingSecretKey | default "config.yaml" }}{{ else }}config.yaml{{ end }}
{{- end }}

{{/*
A map without its empty strings, zeros, nulls and empty maps (booleans are kept), as YAML: so the
recorder's own defaults apply to every key left unset in values.
*/}}
{{- define "livekit-recorder.prune" -}}
{{- $out := dict }}
{{- range $k, $v := . }}
{{- if kindIs "map" $v }}
{{- $sub := include "livekit-recorder.prune" $v | fromYaml }}
{{- if $sub }}{{ $_ := set $out $k $sub }}{{ end }}
{{- else if or (kindIs "bool" $v) $v }}
{{- $_ := set $out $k $v }}
{{- end }}
{{- end }}
{{- if $out }}{{ toYaml $out }}{{ end }}
{{- end }}

{{/* The recorder's config file, from .Values.config. */}}
{{- define "livekit-recorder.config" -}}
{{- $c := .Values.config }}
{{- if and $c.file_output.s3.bucket $c.file_output.azblob.container_name }}
{{- fail "config.file_output: set only one of s3.bucket and azblob.container_name" }}
{{- end }}
{{- include "livekit-recorder.prune" $c }}
{{- end }}

{{/* The health port the probes use; the probes cannot work with the health server off. */}}
{{- define "livekit-recorder.healthPort" -}}
{{- $port := int .Values.config.health_port }}
{{- if or (lt $port 1) (gt $port 65535) }}
{{- fail "config.health_port must be a port (1-65535): the liveness and readiness probes use it" }}
{{- end }}
{{- $port }}
{{- end }}

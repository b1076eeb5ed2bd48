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

{{/* service or egress: which protocol the pods speak to livekit-server. */}}
{{- define "livekit-recorder.mode" -}}
{{- $mode := toString (.Values.mode | default "service") }}
{{- if not (has $mode (list "service" "egress")) }}
{{- fail (printf "mode must be service or egress, not %q" $mode) }}
{{- end }}
{{- $mode }}
{{- end }}

{{/* Config keys only the egress worker reads: left out in service mode. */}}
{{- define "livekit-recorder.egressKeys" -}}
template_base cluster_id cpu_cost s3 azure gcp session_limits enable_chrome_sandbox io_update_egress_info
{{- end }}

{{/*
The recorder's config file, from .Values.config. Service mode: without the egress-only keys, so it
is the config service mode always had. Egress mode: egress's s3 / azure / gcp only when their bucket /
container is set (an s3 map with only force_path_style would name a storage without a bucket).
*/}}
{{- define "livekit-recorder.config" -}}
{{- $c := deepCopy .Values.config }}
{{- $fo := $c.file_output }}
{{- if gt (len (compact (list (dig "s3" "bucket" "" $fo) (dig "azblob" "container_name" "" $fo) (dig "gcp" "bucket" "" $fo)))) 1 }}
{{- fail "config.file_output: set only one of s3.bucket, azblob.container_name and gcp.bucket" }}
{{- end }}
{{- if eq (include "livekit-recorder.mode" .) "egress" }}
{{- $s3 := dig "s3" "bucket" "" $c }}
{{- $azure := dig "azure" "container_name" "" $c }}
{{- $gcp := dig "gcp" "bucket" "" $c }}
{{- if gt (len (compact (list $s3 $azure $gcp))) 1 }}
{{- fail "config: set only one of s3.bucket, azure.container_name and gcp.bucket (egress storage)" }}
{{- end }}
{{- if not $s3 }}{{ $_ := unset $c "s3" }}{{ end }}
{{- if not $azure }}{{ $_ := unset $c "azure" }}{{ end }}
{{- if not $gcp }}{{ $_ := unset $c "gcp" }}{{ end }}
{{- else }}
{{- range splitList " " (include "livekit-recorder.egressKeys" .) }}
{{- $_ := unset $c . }}
{{- end }}
{{- end }}
{{- include "livekit-recorder.prune" $c }}
{{- end }}

{{/*
Egress mode: the whole cores the worker counts, i.e. resources.limits.cpu rounded down (the cgroup
quota, as the recorder reads it); empty without a CPU limit (the worker then counts the node's).
*/}}
{{- define "livekit-recorder.limitCores" -}}
{{- $limit := toString (dig "limits" "cpu" "" (.Values.resources | default dict)) }}
{{- if $limit }}
{{- if hasSuffix "m" $limit }}
{{- div (int64 (trimSuffix "m" $limit)) 1000 }}
{{- else }}
{{- int64 (floor (float64 $limit)) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Egress mode: refuse a CPU limit with room for no web or room-composite egress at all. */}}
{{- define "livekit-recorder.checkCpu" -}}
{{- $cores := include "livekit-recorder.limitCores" . }}
{{- if $cores }}
{{- $cc := .Values.config.cpu_cost | default dict }}
{{- $util := float64 ($cc.max_cpu_utilization | default 0.8) }}
{{- $room := mulf (float64 $cores) $util }}
{{- range $kind := list "room_composite" "web" }}
{{- $cost := float64 ((index $cc (printf "%s_cpu_cost" $kind)) | default 2) }}
{{- if lt $room $cost }}
{{- fail (printf "config.cpu_cost.%s_cpu_cost (%v) is more than resources.limits.cpu (%v whole cores) x cpu_cost.max_cpu_utilization (%v) = %v: the egress worker would never take a %s egress. Raise limits.cpu (rule: requests.cpu = cost x egresses per pod; limits.cpu x max_cpu_utilization >= that)" $kind $cost $cores $util $room $kind) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: at least config.max_duration + 600 (both modes), so that SIGTERM
lets a recording of the longest allowed length finish and upload before SIGKILL.
*/}}
{{- define "livekit-recorder.grace" -}}
{{- $grace := int64 .Values.terminationGracePeriodSeconds }}
{{- $max := int64 (.Values.config.max_duration | default 0) }}
{{- if gt $max 0 }}
{{- $grace = max $grace (add $max 600) }}
{{- end }}
{{- $grace }}
{{- end }}

{{/* The health port the probes use; the probes cannot work with the health server off. */}}
{{- define "livekit-recorder.healthPort" -}}
{{- $port := int .Values.config.health_port }}
{{- if or (lt $port 1) (gt $port 65535) }}
{{- fail "config.health_port must be a port (1-65535): the liveness and readiness probes use it" }}
{{- end }}
{{- $port }}
{{- end }}

{{/*
The pod template's annotations besides checksum/config, as YAML: the prometheus.io scrape
annotations (metrics.scrapeAnnotations) with podAnnotations over them.
*/}}
{{- define "livekit-recorder.podAnnotations" -}}
{{- $a := dict }}
{{- if (.Values.metrics | default dict).scrapeAnnotations }}
{{- $_ := set $a "prometheus.io/scrape" "true" }}
{{- $_ := set $a "prometheus.io/port" (include "livekit-recorder.healthPort" .) }}
{{- $_ := set $a "prometheus.io/path" "/metrics" }}
{{- end }}
{{- $a = mergeOverwrite $a (deepCopy (.Values.podAnnotations | default dict)) }}
{{- if $a }}{{ toYaml $a }}{{ end }}
{{- end }}

{{/* The chart name, or nameOverride (63 characters: a DNS label). */}}
{{- define "cryptolake.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>", or just the release when it already contains the chart name. */}}
{{- define "cryptolake.fullname" -}}
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

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "cryptolake.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource; pass (dict "ctx" $ "component" "operator"). */}}
{{- define "cryptolake.labels" -}}
helm.sh/chart: {{ include "cryptolake.chart" .ctx }}
{{ include "cryptolake.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: cryptolake
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The immutable subset, for selectors. */}}
{{- define "cryptolake.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cryptolake.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "cryptolake.operator.fullname" -}}
{{- printf "%s-operator" (include "cryptolake.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cryptolake.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cryptolake.operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cryptolake.operator.image" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}

{{/* kopf peering: only with more than one replica (one replica runs standalone). */}}
{{- define "cryptolake.peering" -}}
{{- if gt (int .Values.operator.replicaCount) 1 }}{{ include "cryptolake.operator.fullname" . }}{{ end }}
{{- end }}

{{/* The pipeline API's in-cluster URL (the Infinity datasource's default when a pipeline is installed). */}}
{{- define "cryptolake.pipelineApiUrl" -}}
{{- printf "http://%s-api.%s.svc:8000" .Values.pipeline.name .Release.Namespace }}
{{- end }}

{{/* The namespaces the operator watches, as a JSON list: watchNamespaces, else the release's own
namespace ([] when clusterWide: every namespace). */}}
{{- define "cryptolake.watchNamespaces" -}}
{{- if .Values.operator.clusterWide }}
{{- list | toJson }}
{{- else }}
{{- default (list .Release.Namespace) .Values.operator.watchNamespaces | toJson }}
{{- end }}
{{- end }}

{{- define "tributary.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tributary.selectorLabels" -}}
app.kubernetes.io/name: tributary-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tributary.labels" -}}
{{ include "tributary.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tributary.serviceAccountName" -}}
{{- default (include "tributary.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- /* Cluster-scoped objects carry the namespace, so releases in two namespaces do not collide. */ -}}
{{- define "tributary.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "tributary.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- /* The Secret holding the operator's control key: the chart's own, or the user's. */ -}}
{{- define "tributary.controlKeySecret" -}}
{{- default (printf "%s-control-key" (include "tributary.fullname" .)) .Values.controlKey.existingSecret -}}
{{- end -}}

{{- /*
Whether a monitoring.coreos.com object is rendered: `enabled` is auto (when the cluster serves
monitoring.coreos.com/v1; with `helm template`, pass --api-versions monitoring.coreos.com/v1),
true (always) or false (never). Call with (dict "enabled" .Values... "root" $).
*/ -}}
{{- define "tributary.monitoringObject" -}}
{{- $mode := toString .enabled -}}
{{- if or (eq $mode "true") (and (eq $mode "auto") (.root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
true
{{- end -}}
{{- end -}}

{{- define "tributary.podMonitors" -}}
{{- include "tributary.monitoringObject" (dict "enabled" .Values.monitoring.podMonitors.enabled "root" .) -}}
{{- end -}}

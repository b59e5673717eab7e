{{- define "directpipe.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "directpipe.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* envoy.filter, refused unless it is a build of the handshake filter. */}}
{{- define "directpipe.filter" -}}
{{- if not (has .Values.envoy.filter (list "wasm" "native")) -}}
{{- fail (printf "envoy.filter is %q: want wasm or native" .Values.envoy.filter) -}}
{{- end -}}
{{ .Values.envoy.filter }}
{{- end -}}

{{- define "directpipe.cpName" -}}
{{ .Release.Name }}-control-plane
{{- end -}}

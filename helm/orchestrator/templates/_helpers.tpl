{{/* Names ----------------------------------------------------------------- */}}

{{- define "orchestrator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release (resource names are "<fullname>-<component>"). */}}
{{- define "orchestrator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "orchestrator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels: call with (dict "root" $ "component" "gateway"). */}}
{{- define "orchestrator.labels" -}}
helm.sh/chart: {{ include "orchestrator.chart" .root }}
{{ include "orchestrator.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: {{ include "orchestrator.name" .root }}
{{- end }}

{{- define "orchestrator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "orchestrator.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "orchestrator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "orchestrator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "orchestrator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Secrets: names of the Secrets in use (given or generated) --------------- */}}

{{- define "orchestrator.tokenSecret" -}}
{{- default (printf "%s-api-token" (include "orchestrator.fullname" .)) .Values.gateway.auth.existingSecret }}
{{- end }}

{{- define "orchestrator.credentialSecret" -}}
{{- default (printf "%s-controller-credential" (include "orchestrator.fullname" .)) .Values.controllerCredential.existingSecret }}
{{- end }}

{{- define "orchestrator.natsSecret" -}}
{{- default (printf "%s-nats-auth" (include "orchestrator.fullname" .)) .Values.nats.auth.existingSecret }}
{{- end }}

{{/*
A secret value kept across upgrades: the one in the live Secret when there
is one (lookup; empty when rendering offline), else a new random one.
Call with (dict "root" $ "secret" NAME "key" KEY "length" N).
*/}}
{{- define "orchestrator.secretValue" -}}
{{- $cache := .root.Values._generatedSecrets | default dict }}
{{- $id := printf "%s/%s" .secret .key }}
{{- if not (hasKey $cache $id) }}
{{- $live := lookup "v1" "Secret" .root.Release.Namespace .secret }}
{{- if and $live $live.data (hasKey $live.data .key) }}
{{- $_ := set $cache $id (index $live.data .key) }}
{{- else }}
{{- $_ := set $cache $id (randAlphaNum (int .length) | b64enc) }}
{{- end }}
{{- $_ := set .root.Values "_generatedSecrets" $cache }}
{{- end }}
{{- index $cache $id }}
{{- end }}

{{/*
The credential of one controller (names: its name and aliases), issued by
the registration key as orchestration.runtime.credentials does:
"<names>/<sha256 of key, names and key>". Call with (dict "root" $ "names" LIST).
*/}}
{{- define "orchestrator.controllerCredential" -}}
{{- $key := include "orchestrator.secretValue" (dict "root" .root "secret" (include "orchestrator.credentialSecret" .root) "key" "registration-key" "length" 48) | b64dec }}
{{- $names := join "," .names }}
{{- printf "%s/%s" $names (sha256sum (printf "%s\n%s\n%s" $key $names $key)) }}
{{- end }}

{{/*
All a controller is told of the engine key: the SHA-256 of what the engine
presents to it, derived from the key for its name as
orchestration.runtime.credentials.engine_credential_for does.
Call with (dict "root" $ "name" NAME).
*/}}
{{- define "orchestrator.engineCredentialSha256" -}}
{{- $key := include "orchestrator.secretValue" (dict "root" .root "secret" (include "orchestrator.credentialSecret" .root) "key" .root.Values.controllerCredential.existingSecretKey "length" 48) | b64dec }}
{{- printf "%s\nengine %s\n%s" $key .name $key | sha256sum | sha256sum }}
{{- end }}

{{/* NATS -------------------------------------------------------------------- */}}

{{- define "orchestrator.natsName" -}}
{{- printf "%s-nats" (include "orchestrator.fullname" .) }}
{{- end }}

{{/*
Environment of a service that talks to NATS: the URL of its own NATS user
(gateway, dispatcher or monitor; files/nats-permissions.json says what each
may do), its password from the Secret. Call with (dict "root" $ "user" USER).
*/}}
{{- define "orchestrator.natsEnv" -}}
{{- $root := .root }}
{{- if $root.Values.nats.enabled }}
- name: NATS_USER
  value: {{ .user | quote }}
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "orchestrator.natsSecret" $root }}
      key: {{ .user }}-password
- name: ORCH_NATS_URL
  value: "nats://$(NATS_USER):$(NATS_PASSWORD)@{{ include "orchestrator.natsName" $root }}:4222"
{{- else }}
- name: ORCH_NATS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.nats.external.existingSecret }}
      key: {{ $root.Values.nats.external.existingSecretKey }}
{{- end }}
{{- end }}

{{/* The NATS users besides the operator's (nats.auth.user), in the order of the config:
the services', the shared bus user's, and one per named bus client (bus-<name>). */}}
{{- define "orchestrator.natsUsers" -}}
gateway dispatcher monitor bus
{{- range .Values.nats.auth.busClients }} bus-{{ . }}{{ end }}
{{- end }}

{{/* The variable holding a NATS user's password in the server's environment. */}}
{{- define "orchestrator.natsPasswordVar" -}}
NATS_PASSWORD_{{ upper . | replace "-" "_" }}
{{- end }}

{{/* Environment of every service: logs, metrics, traces. */}}
{{- define "orchestrator.commonEnv" -}}
- name: ORCH_LOG_LEVEL
  value: {{ .Values.log.level | quote }}
- name: ORCH_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
{{- if .Values.metrics.enabled }}
- name: ORCH_METRICS_ADDR
  value: "0.0.0.0:{{ .Values.metrics.port }}"
{{- end }}
{{- with (include "orchestrator.otlpEndpoint" .) }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Call with (dict "root" $ "user" USER). */}}
{{- define "orchestrator.serviceEnv" -}}
{{ include "orchestrator.natsEnv" . | trim }}
{{ include "orchestrator.commonEnv" .root | trim }}
{{- end }}

{{/* Where traces go: the chart's Jaeger, else tracing.otlpEndpoint, else nowhere. */}}
{{- define "orchestrator.otlpEndpoint" -}}
{{- if .Values.jaeger.enabled }}
{{- printf "http://%s-jaeger:4317" (include "orchestrator.fullname" .) }}
{{- else }}
{{- .Values.tracing.otlpEndpoint }}
{{- end }}
{{- end }}

{{/* Pod annotations: call with (dict "root" $ "extra" .Values.x.podAnnotations). */}}
{{- define "orchestrator.podAnnotations" -}}
{{- if .root.Values.metrics.enabled }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .root.Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* gRPC health probes on a port: call with (dict "root" $ "port" N). */}}
{{- define "orchestrator.grpcProbes" -}}
livenessProbe:
  grpc:
    port: {{ .port }}
  {{- toYaml .root.Values.probes.liveness | nindent 2 }}
readinessProbe:
  grpc:
    port: {{ .port }}
  {{- toYaml .root.Values.probes.readiness | nindent 2 }}
{{- end }}

{{/*
Init container of the pods that open the repository: waits for NATS, creates
the suite's streams and KV buckets (the services' own configuration) and gives
them nats.jetstream.replicas replicas.
*/}}
{{- define "orchestrator.jetstreamInit" -}}
{{- $root := .root }}
- name: jetstream-init
  image: {{ include "orchestrator.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  command: ["python", "/opt/orchestrator-scripts/jetstream_init.py"]
  env:
    {{- include "orchestrator.natsEnv" . | trim | nindent 4 }}
    - name: ORCH_PREFIX
      value: {{ $root.Values.prefix | quote }}
    - name: ORCH_JETSTREAM_REPLICAS
      value: {{ $root.Values.nats.jetstream.replicas | quote }}
  volumeMounts:
    - name: scripts
      mountPath: /opt/orchestrator-scripts
      readOnly: true
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml $root.Values.jetstreamInit.resources | nindent 4 }}
{{- end }}

{{/* "true" when the init container runs: streams and buckets need more than one replica. */}}
{{- define "orchestrator.jetstreamInitEnabled" -}}
{{- if gt (int .Values.nats.jetstream.replicas) 1 }}true{{ end }}
{{- end }}

{{- define "orchestrator.scriptsVolume" -}}
- name: scripts
  configMap:
    name: {{ include "orchestrator.fullname" . }}-scripts
{{- end }}

{{/* Checks of values the schema cannot express. */}}
{{- define "orchestrator.checks" -}}
{{- if and .Values.nats.enabled (gt (int .Values.nats.jetstream.replicas) (int .Values.nats.replicas)) }}
{{- fail (printf "nats.jetstream.replicas (%v) must not exceed nats.replicas (%v)" .Values.nats.jetstream.replicas .Values.nats.replicas) }}
{{- end }}
{{- if and (not .Values.nats.enabled) (not .Values.nats.external.existingSecret) }}
{{- fail "nats.external.existingSecret must name a Secret holding the NATS URL when nats.enabled is false" }}
{{- end }}
{{- if and .Values.gateway.tls.enabled (not .Values.gateway.tls.secretName) }}
{{- fail "gateway.tls.secretName must name a kubernetes.io/tls Secret when gateway.tls.enabled is true" }}
{{- end }}
{{- $names := dict }}
{{- range .Values.controllers }}
{{- if hasKey $names .name }}
{{- fail (printf "controllers: the name %q is used twice" .name) }}
{{- end }}
{{- $_ := set $names .name true }}
{{- end }}
{{- end }}

{{/*
nats-server configuration. $NAME values come from the container's
environment (POD_NAME; NATS_USER and NATS_PASSWORD from the Secret; one
NATS_ROUTE_<i> per server, its route URL with those credentials), so no
secret is written into the ConfigMap. Routes name every server of the
StatefulSet through the headless Service.
*/}}
{{- define "orchestrator.natsConfig" -}}
{{- $name := include "orchestrator.natsName" . -}}
server_name: $POD_NAME
listen: 0.0.0.0:4222
http_port: 8222
pid_file: /var/run/nats/nats.pid
max_payload: {{ .Values.nats.maxPayload }}
lame_duck_duration: 30s
lame_duck_grace_period: 10s
{{- $permissions := .Files.Get "files/nats-permissions.json" | replace "zzprefixzz" .Values.prefix | replace "ZZPREFIXZZ" (upper .Values.prefix) | fromJson }}
authorization {
  users: [
    # Operators' tools (and the cluster routes): every subject.
    {user: $NATS_USER, password: $NATS_PASSWORD}
    {{- range (splitList " " (include "orchestrator.natsUsers" .)) }}
    {{- $allowed := hasPrefix "bus-" . | ternary (index $permissions "bus-zzclientzz" | toJson | replace "zzclientzz" (trimPrefix "bus-" .)) (index $permissions . | toJson) }}
    {user: {{ . | quote }}, password: ${{ include "orchestrator.natsPasswordVar" . }}, permissions: {{ $allowed | replace "\\u003e" ">" }}}
    {{- end }}
  ]
}
jetstream {
  store_dir: /data
  max_memory_store: {{ .Values.nats.jetstream.maxMemoryStore }}
  max_file_store: {{ .Values.nats.jetstream.maxFileStore }}
}
{{- if gt (int .Values.nats.replicas) 1 }}
cluster {
  name: {{ $name }}
  listen: 0.0.0.0:6222
  authorization {
    user: $NATS_USER
    password: $NATS_PASSWORD
  }
  routes: [
    {{- range $i, $_ := until (int .Values.nats.replicas) }}
    $NATS_ROUTE_{{ $i }}
    {{- end }}
  ]
}
{{- end }}
{{- end }}

{{/* The Jaeger UI the console links traces to: gateway.console.jaegerUrl, else the chart's Jaeger. */}}
{{- define "orchestrator.jaegerUiUrl" -}}
{{- if .Values.gateway.console.jaegerUrl }}
{{- .Values.gateway.console.jaegerUrl }}
{{- else if .Values.jaeger.enabled }}
{{- printf "http://%s-jaeger:16686" (include "orchestrator.fullname" .) }}
{{- end }}
{{- end }}

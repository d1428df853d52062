{{/* Names: <release>-<component>, shortened for DNS labels. */}}
{{- define "ota.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ota.name" -}}
{{- printf "%s-%s" (include "ota.fullname" .root) .component -}}
{{- end -}}

{{- define "ota.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ota.labels" -}}
{{ include "ota.selectorLabels" . }}
app.kubernetes.io/part-of: ota-rollout
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "ota.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ota.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository@digest when a digest is set, else repository:tag (tag defaults to appVersion). */}}
{{- define "ota.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
Pod Security "restricted": non-root, RuntimeDefault seccomp, no token, the image's user.
*/}}
{{- define "ota.podSecurity" -}}
automountServiceAccountToken: false
serviceAccountName: {{ include "ota.serviceAccountName" . }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile: {type: RuntimeDefault}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "ota.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  capabilities: {drop: [ALL]}
  seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{/* Spread one component's pods over zones, then nodes. */}}
{{- define "ota.topologySpread" -}}
{{- if .root.Values.topologySpread.enabled }}
topologySpreadConstraints:
  {{- range list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - maxSkew: {{ $.root.Values.topologySpread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $.root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "ota.selectorLabels" $ | nindent 8 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* nodeSelector, tolerations and affinity of one component's values (.cfg). */}}
{{- define "ota.scheduling" -}}
{{- with .cfg.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .cfg.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .cfg.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* An env entry from credentials.<name> ({secretName, key}). */}}
{{- define "ota.secretEnv" -}}
{{- $ref := index .root.Values.credentials .credential -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "credentials.%s.secretName is required" .credential) $ref.secretName }}
      key: {{ required (printf "credentials.%s.key is required" .credential) $ref.key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/*
An env entry .env with the device credential store's URL: redis.credentials (url or
Secret), else the services' Redis (redis.url or redis.existingSecret). The scheduler
(OTA_CREDENTIALS_REDIS_URL) and the broker (OTA_BROKER_REDIS_URL) get it from here alike.
A Redis Cluster is refused for it (a URL in a Secret is checked by the scheduler at start).
*/}}
{{- define "ota.credentialsRedisEnv" -}}
{{- $r := .root.Values.redis -}}
{{- $secret := $r.credentials.existingSecret -}}
{{- if and (not $secret.name) (not $r.credentials.url) -}}{{- $secret = $r.existingSecret -}}{{- end -}}
{{- if and (not $secret.name) (contains "+cluster://" (default $r.url $r.credentials.url)) -}}
{{- fail "the device credential store must be a standalone Redis (the broker reads it with a standalone client): redis.url names a Redis Cluster, so set redis.credentials.url (or redis.credentials.existingSecret) to a standalone one" -}}
{{- end -}}
- name: {{ .env }}
{{- if $secret.name }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret.name }}
      key: {{ required "redis.credentials.existingSecret.key is required" $secret.key }}
{{- else }}
  value: {{ default $r.url $r.credentials.url | required "redis.url or redis.credentials.url is required" | quote }}
{{- end }}
{{- end -}}

{{/* The MQTT broker as the platform reaches it: host, device port, platform port, presence. */}}
{{- define "ota.mqttHost" -}}
{{- $b := .Values.broker -}}
{{- if eq $b.kind "hivemq" -}}{{ include "ota.name" (dict "root" . "component" "broker") }}
{{- else if eq $b.kind "emqx" -}}{{ $b.emqx.host }}
{{- else if eq $b.kind "external" -}}{{ $b.external.host }}
{{- else -}}{{ fail "broker.kind must be hivemq, emqx or external" }}
{{- end -}}
{{- end -}}

{{- define "ota.mqttDevicePort" -}}
{{- $b := .Values.broker -}}
{{- if eq $b.kind "hivemq" -}}{{ $b.hivemq.tlsPort }}
{{- else if eq $b.kind "emqx" -}}{{ $b.emqx.devicePort }}
{{- else -}}{{ $b.external.devicePort }}
{{- end -}}
{{- end -}}

{{- define "ota.mqttPlatformPort" -}}
{{- $b := .Values.broker -}}
{{- if eq $b.kind "hivemq" -}}{{ $b.hivemq.platformPort }}
{{- else if eq $b.kind "emqx" -}}{{ $b.emqx.platformPort }}
{{- else -}}{{ $b.external.platformPort }}
{{- end -}}
{{- end -}}

{{/*
Environment every service reads (ota/settings.py CommonSettings): the shared ConfigMap,
the Redis URL when it is secret, and the two shared credentials.
*/}}
{{- define "ota.commonEnv" -}}
envFrom:
  - configMapRef:
      name: {{ include "ota.name" (dict "root" .root "component" "config") }}
env:
  {{- if .root.Values.redis.existingSecret.name }}
  - name: OTA_REDIS_URL
    valueFrom:
      secretKeyRef:
        name: {{ .root.Values.redis.existingSecret.name }}
        key: {{ .root.Values.redis.existingSecret.key }}
  {{- end }}
  {{- include "ota.secretEnv" (dict "root" .root "credential" "mqttPlatformPassword" "env" "OTA_MQTT_PLATFORM_PASSWORD") | nindent 2 }}
  {{- include "ota.secretEnv" (dict "root" .root "credential" "tokenKeys" "env" "OTA_TOKEN_KEYS") | nindent 2 }}
  {{- include "ota.secretEnv" (dict "root" .root "credential" "tokenKeyId" "env" "OTA_TOKEN_KEY_ID" "optional" true) | nindent 2 }}
  {{- if .root.Values.credentials.kafkaSaslPassword.secretName }}
  {{- include "ota.secretEnv" (dict "root" .root "credential" "kafkaSaslPassword" "env" "OTA_KAFKA_SASL_PASSWORD") | nindent 2 }}
  {{- end }}
  {{- if .root.Values.credentials.redisPassword.secretName }}
  {{- include "ota.secretEnv" (dict "root" .root "credential" "redisPassword" "env" "OTA_REDIS_PASSWORD") | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* Mounts and volumes of the Kafka and Redis CA Secrets (kafka.security.caSecret,
redis.tls.caSecret), at the paths the ConfigMap's OTA_*_CA_FILE name. */}}
{{- define "ota.caMounts" -}}
{{- if .Values.kafka.security.caSecret.name }}
- {name: kafka-ca, mountPath: /etc/ota/kafka-ca, readOnly: true}
{{- end }}
{{- if .Values.redis.tls.caSecret.name }}
- {name: redis-ca, mountPath: /etc/ota/redis-ca, readOnly: true}
{{- end }}
{{- end -}}

{{- define "ota.caVolumes" -}}
{{- with .Values.kafka.security.caSecret }}
{{- if .name }}
- name: kafka-ca
  secret: {secretName: {{ .name }}, items: [{key: {{ .key }}, path: ca.crt}]}
{{- end }}
{{- end }}
{{- with .Values.redis.tls.caSecret }}
{{- if .name }}
- name: redis-ca
  secret: {secretName: {{ .name }}, items: [{key: {{ .key }}, path: ca.crt}]}
{{- end }}
{{- end }}
{{- end -}}

{{/* A component's extraEnv, last in its env list so that it wins over the chart's. */}}
{{- define "ota.extraEnv" -}}
{{- range $name, $value := .extraEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Annotations that restart pods when the shared ConfigMap changes. */}}
{{- define "ota.configChecksum" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end -}}

{{/*
The env entries selecting the package bucket (packageStore.type s3) for the scheduler and
the edges: endpoint, bucket, region, part size and the credentials from their Secret.
*/}}
{{- define "ota.packageStoreEnv" -}}
{{- $s3 := .root.Values.packageStore.s3 -}}
- {name: OTA_PACKAGE_STORE, value: s3}
- {name: OTA_S3_ENDPOINT, value: {{ required "packageStore.s3.endpoint is required with packageStore.type s3" $s3.endpoint | quote }}}
- {name: OTA_S3_BUCKET, value: {{ required "packageStore.s3.bucket is required with packageStore.type s3" $s3.bucket | quote }}}
- {name: OTA_S3_REGION, value: {{ $s3.region | default "us-east-1" | quote }}}
- {name: OTA_S3_PART_MIB, value: {{ $s3.partMiB | default 64 | int | quote }}}
{{ include "ota.secretEnv" (dict "root" .root "credential" "s3AccessKeyId" "env" "OTA_S3_ACCESS_KEY_ID") }}
{{ include "ota.secretEnv" (dict "root" .root "credential" "s3SecretAccessKey" "env" "OTA_S3_SECRET_ACCESS_KEY") }}
{{- end -}}

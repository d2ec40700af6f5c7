{{/*
Names, labels and the pieces every MOAI pod shares. Object templates stay short by
including these; values.yaml documents what each value means.
*/}}

{{- define "moai.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name; with the release moai-service it is moai-service, which names the worker Deployment. */}}
{{- define "moai.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "moai.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels of one component: (dict "ctx" $ "component" "web").
`app` is what the runbook selects by (kubectl logs -l app=moai-service); `component` tells the
processes apart; the instance label keeps two releases in one namespace apart.
*/}}
{{- define "moai.selectorLabels" -}}
app: {{ include "moai.name" .ctx }}
component: {{ .component }}
app.kubernetes.io/name: {{ include "moai.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "moai.labels" -}}
{{ include "moai.selectorLabels" . }}
helm.sh/chart: {{ include "moai.chart" .ctx }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end -}}

{{/* Labels of objects that belong to the whole release rather than one component. */}}
{{- define "moai.releaseLabels" -}}
app: {{ include "moai.name" . }}
app.kubernetes.io/name: {{ include "moai.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ include "moai.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "moai.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "moai.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "moai.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "moai.webName" -}}{{ include "moai.fullname" . }}-web{{- end -}}
{{- define "moai.dataClaimName" -}}{{ default (printf "%s-data" (include "moai.fullname" .)) .Values.persistence.existingClaim }}{{- end -}}

{{/*
Where SECRET_KEY, MOAI_AUDIT_KEY, DATABASE_URL and REDIS_URL come from: a Secret of the operator's,
or the chart's own, .chart: <release> for the pods, <release>-migrate for the migration Job.
*/}}
{{- define "moai.secretKeySecret" -}}{{ default .chart .ctx.Values.moai.secretKey.existingSecret }}{{- end -}}
{{- define "moai.secretKeyKey" -}}{{ ternary .Values.moai.secretKey.existingSecretKey "secret-key" (ne .Values.moai.secretKey.existingSecret "") }}{{- end -}}
{{- define "moai.auditKeySecret" -}}{{ default .chart .ctx.Values.moai.auditKey.existingSecret }}{{- end -}}
{{- define "moai.auditKeyKey" -}}{{ ternary .Values.moai.auditKey.existingSecretKey "audit-key" (ne .Values.moai.auditKey.existingSecret "") }}{{- end -}}
{{/* The key holding the audit keys rotated out, or nothing when there are none. */}}
{{- define "moai.auditPreviousKeysKey" -}}
{{- if .Values.moai.auditKey.existingSecret -}}{{ .Values.moai.auditKey.existingSecretPreviousKeysKey }}{{- else if .Values.moai.auditKey.previousKeys -}}audit-previous-keys{{- end -}}
{{- end -}}
{{- define "moai.databaseSecret" -}}{{ default .chart .ctx.Values.database.existingSecret }}{{- end -}}
{{- define "moai.databaseKey" -}}{{ ternary .Values.database.existingSecretKey "database-url" (ne .Values.database.existingSecret "") }}{{- end -}}
{{/* The schema owner's URL, which only the migration Job reads. */}}
{{- define "moai.databaseOwnerSecret" -}}{{ ternary .chart (default .chart .ctx.Values.database.ownerExistingSecret) .ctx.Values.postgresql.enabled }}{{- end -}}
{{- define "moai.databaseOwnerKey" -}}{{ ternary .Values.database.ownerExistingSecretKey "database-owner-url" (and (not .Values.postgresql.enabled) (ne .Values.database.ownerExistingSecret "")) }}{{- end -}}
{{- define "moai.redisSecret" -}}{{ default .chart .ctx.Values.redis.existingSecret }}{{- end -}}
{{- define "moai.redisKey" -}}{{ ternary .Values.redis.existingSecretKey "redis-url" (ne .Values.redis.existingSecret "") }}{{- end -}}

{{/*
What the chart's own Secret holds (JSON): every key, password and URL the operator gave as a value
rather than as a Secret of theirs. secret.yaml is it for the pods, secret-migrate.yaml for the
migration Job.
*/}}
{{- define "moai.chartSecretData" -}}
{{- $data := dict -}}
{{- if not .Values.moai.secretKey.existingSecret -}}
{{- $_ := set $data "secret-key" .Values.moai.secretKey.value -}}
{{- end -}}
{{- if not .Values.moai.auditKey.existingSecret -}}
{{- $_ := set $data "audit-key" .Values.moai.auditKey.value -}}
{{- with .Values.moai.auditKey.previousKeys -}}
{{- $_ := set $data "audit-previous-keys" (join "," .) -}}
{{- end -}}
{{- end -}}
{{- if .Values.postgresql.enabled -}}
{{- $pg := .Values.postgresql -}}
{{- $host := printf "postgresql.%s.svc:5432/%s" .Release.Namespace $pg.database -}}
{{- $_ := set $data "postgres-password" $pg.password -}}
{{- $_ := set $data "database-url" (printf "postgres://%s:%s@%s" $pg.serviceUsername $pg.servicePassword $host) -}}
{{- $_ := set $data "database-owner-url" (printf "postgres://%s:%s@%s" $pg.username $pg.password $host) -}}
{{- else -}}
{{- if not .Values.database.existingSecret -}}
{{- $_ := set $data "database-url" .Values.database.url -}}
{{- end -}}
{{- if not .Values.database.ownerExistingSecret -}}
{{- $_ := set $data "database-owner-url" .Values.database.ownerUrl -}}
{{- end -}}
{{- end -}}
{{- if .Values.redis.enabled -}}
{{- $_ := set $data "redis-password" .Values.redis.password -}}
{{- $_ := set $data "redis-url" (printf "redis://:%s@redis.%s.svc:6379/0" .Values.redis.password .Release.Namespace) -}}
{{- else if not .Values.redis.existingSecret -}}
{{- $_ := set $data "redis-url" .Values.redis.url -}}
{{- end -}}
{{- toJson $data -}}
{{- end -}}

{{/* mTLS material: the server's key pair, the CA that client certificates must chain to, and an optional probe certificate. */}}
{{- define "moai.tlsSecret" -}}{{ default (printf "%s-tls" (include "moai.fullname" .)) .Values.moai.tls.existingSecret }}{{- end -}}
{{- define "moai.clientCaSecret" -}}{{ default (include "moai.tlsSecret" .) .Values.moai.tls.clientCaSecret }}{{- end -}}
{{- define "moai.metricsClientSecret" -}}{{ default (printf "%s-metrics-client" (include "moai.fullname" .)) .Values.metrics.serviceMonitor.tlsSecret }}{{- end -}}

{{/* A CPU quantity ("4000m", "2", 2.5) in whole cores, rounded down. */}}
{{- define "moai.cpuCores" -}}
{{- $q := toString . -}}
{{- if hasSuffix "m" $q -}}
{{- div (trimSuffix "m" $q | atoi) 1000 -}}
{{- else -}}
{{- $q | float64 | floor | int -}}
{{- end -}}
{{- end -}}

{{/* A memory quantity ("8Gi", "512Mi", "4G", 4294967296) in MiB, rounded down. */}}
{{- define "moai.memoryMiB" -}}
{{- $q := toString . -}}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $q -}}
{{- $unit := trimPrefix $number $q -}}
{{- $perMiB := dict "" (divf 1 1048576) "Ki" (divf 1 1024) "Mi" 1 "Gi" 1024 "Ti" 1048576 "k" (divf 1000 1048576) "M" (divf 1000000 1048576) "G" (divf 1000000000 1048576) "T" (divf 1000000000000 1048576) -}}
{{- if or (not $number) (not (hasKey $perMiB $unit)) -}}
{{- fail (printf "cannot read the memory quantity %q: use a number with Ki, Mi, Gi, Ti, k, M, G or T" $q) -}}
{{- end -}}
{{- mulf ($number | float64) (get $perMiB $unit) | floor | int -}}
{{- end -}}

{{/* Memory limit of a worker container divided among its pool processes, in MiB. */}}
{{- define "moai.workerShareMiB" -}}
{{- div (include "moai.memoryMiB" .Values.resources.limits.memory | atoi) .Values.moai.workerPoolSize -}}
{{- end -}}

{{/*
Checks that values.schema.json cannot express; each failure says what to change.
Included by every Deployment, so `helm template`, `lint` and `install` all stop on them.
*/}}
{{- define "moai.validate" -}}
{{- if and (eq .Values.storage.type "s3") (not .Values.storage.s3.bucket) -}}
{{- fail "storage.type=s3 needs storage.s3.bucket" -}}
{{- end -}}
{{- if and .Values.postgresql.enabled (or .Values.database.url .Values.database.existingSecret) -}}
{{- fail "database.url/database.existingSecret name an external database: set postgresql.enabled=false, or leave them empty to use the bundled PostgreSQL" -}}
{{- end -}}
{{- if not (or .Values.postgresql.enabled .Values.database.url .Values.database.existingSecret) -}}
{{- fail "no database: set database.url or database.existingSecret, or postgresql.enabled=true" -}}
{{- end -}}
{{- if and .Values.redis.enabled (or .Values.redis.url .Values.redis.existingSecret) -}}
{{- fail "redis.url/redis.existingSecret name an external Redis: set redis.enabled=false, or leave them empty to use the bundled Redis" -}}
{{- end -}}
{{- if not (or .Values.redis.enabled .Values.redis.url .Values.redis.existingSecret) -}}
{{- fail "no Redis: set redis.url or redis.existingSecret, or redis.enabled=true" -}}
{{- end -}}
{{- include "moai.validateSecrets" . -}}
{{- $share := include "moai.workerShareMiB" . | atoi -}}
{{- if lt $share 2048 -}}
{{- fail (printf "resources.limits.memory=%v shared by moai.workerPoolSize=%v pool processes leaves %d MiB each; the runbook's minimum is 2 GiB per worker: raise the limit or lower the pool size" .Values.resources.limits.memory .Values.moai.workerPoolSize $share) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail (printf "autoscaling.minReplicas=%v is above autoscaling.maxReplicas=%v" .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) -}}
{{- end -}}
{{- end -}}

{{/*
Every key and password comes from the operator: one the chart generated would change at every
`helm template`, and a changed audit key or database password breaks what was made with the old one.
*/}}
{{- define "moai.validateSecrets" -}}
{{- $why := "the chart generates no keys or passwords, because a generated one would differ at every render (helm template, Argo CD, Flux)" -}}
{{- if not (or .Values.moai.secretKey.value .Values.moai.secretKey.existingSecret) -}}
{{- fail (printf "moai.secretKey is not set: %s. Set moai.secretKey.value (e.g. --set moai.secretKey.value=$(openssl rand -hex 32)) or moai.secretKey.existingSecret, a Secret of yours with the key %s (docs/runbook.md, Quick Deploy)" $why .Values.moai.secretKey.existingSecretKey) -}}
{{- end -}}
{{- if not (or .Values.moai.auditKey.value .Values.moai.auditKey.existingSecret) -}}
{{- fail (printf "moai.auditKey is not set: %s. Set moai.auditKey.value (e.g. --set moai.auditKey.value=$(openssl rand -hex 32)) or moai.auditKey.existingSecret, a Secret of yours with the key %s, and keep a copy of the key outside the cluster (docs/runbook.md, Quick Deploy)" $why .Values.moai.auditKey.existingSecretKey) -}}
{{- end -}}
{{- if .Values.postgresql.enabled -}}
{{- if not (and .Values.postgresql.password .Values.postgresql.servicePassword) -}}
{{- fail (printf "postgresql.password and postgresql.servicePassword must both be set for the bundled PostgreSQL: %s. E.g. --set postgresql.password=$(openssl rand -hex 24) --set postgresql.servicePassword=$(openssl rand -hex 24); keep them for upgrades" $why) -}}
{{- end -}}
{{- if eq .Values.postgresql.username .Values.postgresql.serviceUsername -}}
{{- fail "postgresql.serviceUsername must differ from postgresql.username: the service must not connect as the schema's owner" -}}
{{- end -}}
{{- else if not (or .Values.database.ownerUrl .Values.database.ownerExistingSecret) -}}
{{- fail "database.ownerUrl or database.ownerExistingSecret is not set: the migration Job connects as the schema's owner, the service as the role in database.url / database.existingSecret, which may add audit records but not change them (docs/runbook.md, Database roles)" -}}
{{- end -}}
{{- if and .Values.redis.enabled (not .Values.redis.password) -}}
{{- fail (printf "redis.password must be set for the bundled Redis: %s. E.g. --set redis.password=$(openssl rand -hex 24)" $why) -}}
{{- end -}}
{{- end -}}

{{/* Pod-level security: the Pod Security Standard "restricted". The image's user is 10001. */}}
{{- define "moai.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .gid }}
fsGroup: {{ .gid }}
# Large shared volumes: change ownership only when the volume's root does not match.
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "moai.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Environment of every MOAI container. Secrets arrive as files (X_FILE, read by base.env),
so they are neither in `kubectl describe` nor inherited by child processes' environments.
*/}}
{{- define "moai.env" -}}
{{- $web := include "moai.webName" . -}}
- name: MOAI_POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
# The pod's address is allowed because the kubelet's probes and Prometheus send it as Host.
- name: ALLOWED_HOSTS
  value: {{ concat (list "$(MOAI_POD_IP)" "[$(MOAI_POD_IP)]" "localhost" "127.0.0.1" $web (printf "%s.%s" $web .Release.Namespace) (printf "%s.%s.svc" $web .Release.Namespace) (printf "%s.%s.svc.cluster.local" $web .Release.Namespace)) .Values.moai.allowedHosts | join "," | quote }}
- name: DEBUG
  value: "0"
- name: SECRET_KEY_FILE
  value: /run/secrets/moai/secret-key
- name: DATABASE_URL_FILE
  value: /run/secrets/moai/database-url
- name: REDIS_URL_FILE
  value: /run/secrets/moai/redis-url
- name: MOAI_AUDIT_KEY_FILE
  value: /run/secrets/moai/audit-key
{{- if include "moai.auditPreviousKeysKey" . }}
- name: MOAI_AUDIT_PREVIOUS_KEYS_FILE
  value: /run/secrets/moai/audit-previous-keys
{{- end }}
# The shared volume (storage.type=filesystem): blobs, uploads in progress, beat's schedule, worker
# status files. With s3 the pod's own emptyDir, blobs being in the bucket.
- name: MOAI_DATA_DIR
  value: /var/lib/moai
{{- if eq .Values.storage.type "s3" }}
{{- $s3 := .Values.storage.s3 }}
- name: MOAI_BLOB_STORAGE
  value: s3
- name: MOAI_S3_BUCKET
  value: {{ $s3.bucket | quote }}
{{- with $s3.endpoint }}
- name: MOAI_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with $s3.region }}
- name: MOAI_S3_REGION
  value: {{ . | quote }}
{{- end }}
{{- with $s3.addressingStyle }}
- name: MOAI_S3_ADDRESSING_STYLE
  value: {{ . | quote }}
{{- end }}
{{- with $s3.prefix }}
- name: MOAI_S3_PREFIX
  value: {{ . | quote }}
{{- end }}
{{- if $s3.existingSecret }}
- name: MOAI_S3_ACCESS_KEY_ID_FILE
  value: /run/secrets/moai/s3-access-key-id
- name: MOAI_S3_SECRET_ACCESS_KEY_FILE
  value: /run/secrets/moai/s3-secret-access-key
{{- end }}
{{- end }}
# Per pod, not on the shared volume: each process host sums only its own processes' metric files.
- name: PROMETHEUS_MULTIPROC_DIR
  value: /run/moai/metrics
- name: HOME
  value: /tmp
- name: TMPDIR
  value: /tmp
- name: MOAI_SESSION_TTL_SECONDS
  value: {{ .Values.moai.sessionTtlSeconds | int64 | quote }}
- name: MOAI_RESULT_RETENTION_SECONDS
  value: {{ .Values.moai.resultRetentionSeconds | int64 | quote }}
- name: MOAI_MAX_KEY_BYTES
  value: {{ .Values.moai.maxKeyBytes | int64 | quote }}
- name: MOAI_MAX_CIPHERTEXT_BYTES
  value: {{ .Values.moai.maxCiphertextBytes | int64 | quote }}
- name: MOAI_JOB_SOFT_TIME_LIMIT
  value: {{ .Values.moai.jobSoftTimeLimitSeconds | int64 | quote }}
- name: MOAI_RATE_LIMIT_SESSIONS
  value: {{ .Values.moai.rateLimitSessions | quote }}
- name: MOAI_RATE_LIMIT_JOBS
  value: {{ .Values.moai.rateLimitJobs | quote }}
- name: MOAI_RATE_LIMIT_REQUESTS
  value: {{ .Values.moai.rateLimitRequests | quote }}
- name: MOAI_MAX_WAITS_PER_CLIENT
  value: {{ .Values.moai.maxWaitsPerClient | int64 | quote }}
- name: MOAI_MAX_ACTIVE_SESSIONS_PER_CLIENT
  value: {{ .Values.moai.maxActiveSessionsPerClient | int64 | quote }}
- name: MOAI_WORKER_METRICS_PORT
  value: {{ .Values.moai.workerMetricsPort | int64 | quote }}
- name: MOAI_LOG_LEVEL
  value: {{ .Values.moai.logLevel | quote }}
{{- range .Values.moai.extraEnv }}
- name: {{ .name }}
  value: {{ .value | quote }}
{{- end }}
{{- end -}}

{{/* Worker-only environment: pool size and what is derived from the worker's resource limits. */}}
{{- define "moai.workerEnv" -}}
{{- $pool := int .Values.moai.workerPoolSize -}}
{{- $share := include "moai.workerShareMiB" . | atoi -}}
{{- $cores := include "moai.cpuCores" .Values.resources.limits.cpu | atoi -}}
- name: MOAI_WORKER_POOL_SIZE
  value: {{ $pool | quote }}
# os.cpu_count() in a container is the node's, not the limit: set the threads per pool process here.
- name: OMP_NUM_THREADS
  value: {{ max 1 (div $cores $pool) | quote }}
- name: MOAI_WORKER_MAX_MEMORY_MB
  value: {{ ternary (int64 .Values.moai.workerMaxMemoryMb) (div (mul $share 3) 4) (gt (int64 .Values.moai.workerMaxMemoryMb) 0) | quote }}
- name: MOAI_KEY_CACHE_BYTES
  value: {{ ternary (int64 .Values.moai.keyCacheBytes) (mul (div $share 2) 1048576) (gt (int64 .Values.moai.keyCacheBytes) 0) | quote }}
{{- end -}}

{{/* Volumes of every MOAI pod: the shared data volume, scratch space, metric files and the secrets. */}}
{{- /*
Volumes of web, worker and beat: (dict "ctx" $ "component" "worker"). With storage.type=s3 the
data folder is the pod's own emptyDir (blobs are in the bucket): the workers' holds their model
cache (storage.s3.workerCacheSize), web's and beat's uploads in progress and the schedule.
*/ -}}
{{- define "moai.volumes" -}}
{{- with .ctx -}}
- name: data
{{- if eq .Values.storage.type "s3" }}
  emptyDir:
    sizeLimit: {{ ternary .Values.storage.s3.workerCacheSize .Values.storage.s3.scratchSize (eq $.component "worker") }}
{{- else }}
  persistentVolumeClaim:
    claimName: {{ include "moai.dataClaimName" . }}
{{- end }}
{{ include "moai.scratchVolumes" (dict "ctx" . "owner" false) }}
{{- end -}}
{{- end -}}

{{/*
Everything but the data volume: the migration Job runs without it. (dict "ctx" $ "owner" true) is
the migration Job's: its database-url is the schema owner's, and service-database-url the service's.
*/}}
{{- define "moai.scratchVolumes" -}}
{{- $owner := .owner -}}
{{- $ctx := .ctx -}}
{{- $names := dict "ctx" .ctx "chart" (printf "%s%s" (include "moai.fullname" .ctx) (ternary "-migrate" "" $owner)) -}}
{{- with .ctx -}}
# Concrete links each circuit into a shared library under TMPDIR when it loads a model.
- name: tmp
  emptyDir:
    sizeLimit: 2Gi
- name: metrics
  emptyDir:
    sizeLimit: 256Mi
- name: secrets
  projected:
    defaultMode: 0440
    sources:
      - secret:
          name: {{ include "moai.secretKeySecret" $names }}
          items:
            - key: {{ include "moai.secretKeyKey" . }}
              path: secret-key
      - secret:
          name: {{ include "moai.auditKeySecret" $names }}
          items:
            - key: {{ include "moai.auditKeyKey" . }}
              path: audit-key
      {{- with include "moai.auditPreviousKeysKey" . }}
      - secret:
          name: {{ include "moai.auditKeySecret" $names }}
          items:
            - key: {{ . }}
              path: audit-previous-keys
      {{- end }}
      {{- if $owner }}
      - secret:
          name: {{ include "moai.databaseOwnerSecret" $names }}
          items:
            - key: {{ include "moai.databaseOwnerKey" . }}
              path: database-url
      - secret:
          name: {{ include "moai.databaseSecret" $names }}
          items:
            - key: {{ include "moai.databaseKey" . }}
              path: service-database-url
      {{- else }}
      - secret:
          name: {{ include "moai.databaseSecret" $names }}
          items:
            - key: {{ include "moai.databaseKey" . }}
              path: database-url
      {{- end }}
      - secret:
          name: {{ include "moai.redisSecret" $names }}
          items:
            - key: {{ include "moai.redisKey" . }}
              path: redis-url
      {{- if and (eq .Values.storage.type "s3") .Values.storage.s3.existingSecret }}
      - secret:
          name: {{ .Values.storage.s3.existingSecret }}
          items:
            - key: {{ .Values.storage.s3.accessKeyIdKey }}
              path: s3-access-key-id
            - key: {{ .Values.storage.s3.secretAccessKeyKey }}
              path: s3-secret-access-key
      {{- end }}
{{- end -}}
{{- end -}}

{{- define "moai.volumeMounts" -}}
- name: data
  mountPath: /var/lib/moai
- name: tmp
  mountPath: /tmp
- name: metrics
  mountPath: /run/moai/metrics
- name: secrets
  mountPath: /run/secrets/moai
  readOnly: true
{{- end -}}

{{/* Pod settings shared by web, worker, beat and the migration Job. */}}
{{- define "moai.podCommon" -}}
serviceAccountName: {{ include "moai.serviceAccountName" . }}
# MOAI never talks to the Kubernetes API.
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "moai.podSecurityContext" (dict "uid" 10001 "gid" 10001) | nindent 2 }}
{{- end -}}

{{/* Pod annotations: a changed Secret rolls the pods that read it. */}}
{{- define "moai.podAnnotations" -}}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Scheduling of MOAI pods; workers may have their own (worker.nodeSelector, ...). */}}
{{- define "moai.scheduling" -}}
{{- $nodeSelector := .nodeSelector | default .ctx.Values.nodeSelector -}}
{{- $tolerations := .tolerations | default .ctx.Values.tolerations -}}
{{- $affinity := .affinity | default .ctx.Values.affinity -}}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
nginx's own answers in the API's JSON error format, for one server block of the proxy. Each item:
(nginx status, status sent, code, message). 494 is nginx's code for headers over its buffers.
A request line nginx cannot read (over 8 KiB) has no URI to redirect with: nginx answers it itself.
*/}}
{{- define "moai.proxyErrorPages" -}}
{{- range . }}
error_page {{ index . 0 }} ={{ index . 1 }} @error{{ index . 0 }};
{{- end }}
{{- range . }}
location @error{{ index . 0 }} {
    default_type application/json;
    {{- if eq (index . 1) 503 }}
    add_header Retry-After "5" always;
    {{- else if eq (index . 1) 429 }}
    add_header Retry-After "1" always;
    {{- end }}
    return {{ index . 1 }} '{{ dict "error" (dict "code" (index . 2) "message" (index . 3)) | toJson }}';
}
{{- end }}
{{- end -}}

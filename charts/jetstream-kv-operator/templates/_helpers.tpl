{{/*
The chart name, or nameOverride.
*/}}
{{- define "jetstream-kv-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name that prefixes every resource: fullnameOverride, or <release>-<chart> (just <release>
when it already contains the chart name). Truncated to 63 characters, the limit of label values
and DNS labels.
*/}}
{{- define "jetstream-kv-operator.fullname" -}}
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

{{/*
The chart label value: <name>-<version>.
*/}}
{{- define "jetstream-kv-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource.
*/}}
{{- define "jetstream-kv-operator.labels" -}}
helm.sh/chart: {{ include "jetstream-kv-operator.chart" . }}
{{ include "jetstream-kv-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ include "jetstream-kv-operator.version" . | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: jetstream-kv-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the operator pods. Never change them: a Deployment's selector is immutable.
*/}}
{{- define "jetstream-kv-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jetstream-kv-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The version the release runs: the image tag, else the appVersion. A label value, so sanitised.
*/}}
{{- define "jetstream-kv-operator.version" -}}
{{- default .Chart.AppVersion .Values.image.tag | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The ServiceAccount the operator runs as.
*/}}
{{- define "jetstream-kv-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jetstream-kv-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The container image: repository@digest when a digest is set, else repository:tag.
*/}}
{{- define "jetstream-kv-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The leader-election Lease name.
*/}}
{{- define "jetstream-kv-operator.leaseName" -}}
{{- default (include "jetstream-kv-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
RBAC rules on the namespaced resources of the namespaces the operator watches. Used by the
ClusterRole (all namespaces) or by one Role per watched namespace, so that both modes grant
exactly the same verbs.
*/}}
{{- define "jetstream-kv-operator.watchedRules" -}}
# The Dapr Components it provisions buckets for: read them, and write only their metadata
# (status annotations and, with deletion-policy: delete, a finalizer) with server-side apply.
- apiGroups: ["dapr.io"]
  resources: ["components"]
  verbs: ["get", "list", "watch", "patch"]
# Setting an owner reference with blockOwnerDeletion (KeyValueBucket -> Component) needs this
# where the OwnerReferencesPermissionEnforcement admission plugin runs.
- apiGroups: ["dapr.io"]
  resources: ["components/finalizers"]
  verbs: ["update"]
# Secrets that Components reference (secretKeyRef): read only, in watched namespaces only.
# rbac.secrets=get drops list/watch: only the Secrets Components name can be read.
- apiGroups: [""]
  resources: ["secrets"]
  {{- if eq .Values.rbac.secrets "get" }}
  verbs: ["get"]
  {{- else }}
  verbs: ["get", "list", "watch"]
  {{- end }}
{{- if .Values.natsServerPolicy.mintUsers }}
# Users minted per Component: the Secret a Component's jwt and seedKey name, written with
# server-side apply (create and patch; never another Secret's data, which it refuses to touch).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create", "patch"]
{{- end }}
# Its own resource, one per Component.
- apiGroups: ["jetstreamkv.io"]
  resources: ["keyvaluebuckets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["jetstreamkv.io"]
  resources: ["keyvaluebuckets/status"]
  verbs: ["get", "patch", "update"]
# Its resource for pubsub.jetstream Components, one per Component.
- apiGroups: ["jetstreamkv.io"]
  resources: ["jetstreamstreams"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["jetstreamkv.io"]
  resources: ["jetstreamstreams/status"]
  verbs: ["get", "patch", "update"]
# Dapr's declarative Subscriptions: read only, for the topics a pub/sub stream must hold.
- apiGroups: ["dapr.io"]
  resources: ["subscriptions"]
  verbs: ["get", "list", "watch"]
# Events on Components and KeyValueBuckets.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.heal.enabled }}
# Heal (heal.enabled): read the workloads and pods of a Component's namespace when its bucket or
# stream turns Ready, and roll out those that load it (a patch of the pod template, as kubectl
# rollout restart does). Off: nothing on workloads or pods.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
{{- end }}
{{- end }}

{{/*
The admission webhook's Service, and the name of its ValidatingWebhookConfiguration.
*/}}
{{- define "jetstream-kv-operator.webhookService" -}}
{{- printf "%s-webhook" (include "jetstream-kv-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jetstream-kv-operator.webhookConfiguration" -}}
{{- include "jetstream-kv-operator.fullname" . }}
{{- end }}

{{/*
The PromQL label matchers that select the operator's series in alerts and the dashboard:
prometheusRule.selector, else the job and namespace a ServiceMonitor of this chart gives them
(the metrics Service's name and the release namespace).
*/}}
{{- define "jetstream-kv-operator.metricsSelector" -}}
{{- if .Values.prometheusRule.selector -}}
{{- .Values.prometheusRule.selector -}}
{{- else -}}
{{- printf "job=%q, namespace=%q" (printf "%s-metrics" (include "jetstream-kv-operator.fullname" .)) .Release.Namespace -}}
{{- end -}}
{{- end }}

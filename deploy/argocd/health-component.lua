-- Argo CD health check of a dapr.io/Component, for the state.jetstream Components that
-- jetstream-kv-operator provisions. Components of other types are Healthy (not judged).
--
-- Dapr's Component has no status, so the operator summarises its KeyValueBucket's Ready
-- condition in annotations: jetstreamkv.io/ready, jetstreamkv.io/reason and
-- jetstreamkv.io/observed-generation.
--   Healthy      ready is "true" for the current generation;
--   Degraded     ready is "false" with a reason that only a change of the Component (or its
--                Secrets) fixes, the reasons the KeyValueBucket reports with Stalled=True;
--   Progressing  no annotations yet, a generation not observed yet, or ready "false" with a
--                transient reason (the KeyValueBucket's Reconciling=True: NATS unreachable...).
-- Install: deploy/argocd/argocd-cm.yaml. Source of truth: this file.

-- Reasons of transient failures, which the operator retries with back-off (Reconciling=True).
local transient = {
  NatsUnavailable = true, NatsTimeout = true, NatsRequestFailed = true, JwtNotYetValid = true,
  BucketMissing = true, BucketCreateConflict = true, SecretReadFailed = true,
  DeletionPending = true,
}

local hs = {}
local spec = obj.spec
if spec == nil or type(spec.type) ~= "string" or string.lower(spec.type) ~= "state.jetstream" then
  hs.status = "Healthy"
  hs.message = ""
  return hs
end

local annotations = {}
if obj.metadata ~= nil and obj.metadata.annotations ~= nil then
  annotations = obj.metadata.annotations
end
local ready = annotations["jetstreamkv.io/ready"]
local reason = annotations["jetstreamkv.io/reason"] or ""
local observed = tonumber(annotations["jetstreamkv.io/observed-generation"] or "")
local generation = obj.metadata and obj.metadata.generation

hs.status = "Progressing"
if ready == nil or ready == "" then
  hs.message = "Waiting for jetstream-kv-operator to provision the bucket"
  return hs
end
if generation ~= nil and observed ~= nil and observed ~= generation then
  hs.message = "Waiting for jetstream-kv-operator to observe generation " .. tostring(generation)
  return hs
end

local detail = "; see kubectl describe keyvaluebucket " .. tostring(obj.metadata.name)
if ready == "true" then
  hs.status = "Healthy"
  hs.message = "Bucket ready (" .. reason .. ")"
elseif ready == "false" and transient[reason] then
  hs.message = "Bucket not ready yet, retrying: " .. reason .. detail
elseif ready == "false" then
  hs.status = "Degraded"
  if reason == "" then
    reason = "NotReady"
  end
  hs.message = "Bucket not ready: " .. reason .. detail
else
  hs.message = "Bucket readiness unknown (" .. reason .. ")"
end
return hs

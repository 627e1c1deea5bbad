-- Argo CD health check of a dapr.io/Component, for the state.jetstream and pubsub.jetstream
-- Components that jetstream-kv-operator provisions. Components of other types are Healthy (not
-- judged).
--
-- Dapr's Component has no status, so the operator summarises the Ready condition of its
-- KeyValueBucket (state.jetstream) or JetStreamStream (pubsub.jetstream) in annotations: jetstreamkv.io/ready, jetstreamkv.io/reason and
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
  MintingFailed = true,
  DeletionPending = true,
  QuorumLost = true, NoStreamLeader = true, JetStreamUnavailable = true, ReplicasNotCurrent = true,
  StreamMissing = true, StreamCreateConflict = true, SubscriptionsUnreadable = true,
}

-- Argo CD runs this script without Lua's standard libraries (no string.lower, no string.sub):
-- only the base and table libraries and a safe os. So the type is matched in any ASCII case, as
-- the operator matches it, with comparison operators only. A string s starts with prefix .. c
-- exactly when prefix .. c <= s < prefix .. d, d being the character after c: Lua compares
-- strings byte by byte. Each row: a character of the type and the next one, in lower then in
-- upper case.
local STATE_JETSTREAM = {
  {"s", "t", "S", "T"}, {"t", "u", "T", "U"}, {"a", "b", "A", "B"}, {"t", "u", "T", "U"},
  {"e", "f", "E", "F"}, {".", "/"}, {"j", "k", "J", "K"}, {"e", "f", "E", "F"},
  {"t", "u", "T", "U"}, {"s", "t", "S", "T"}, {"t", "u", "T", "U"}, {"r", "s", "R", "S"},
  {"e", "f", "E", "F"}, {"a", "b", "A", "B"}, {"m", "n", "M", "N"},
}

local PUBSUB_JETSTREAM = {
  {"p", "q", "P", "Q"}, {"u", "v", "U", "V"}, {"b", "c", "B", "C"}, {"s", "t", "S", "T"},
  {"u", "v", "U", "V"}, {"b", "c", "B", "C"}, {".", "/"}, {"j", "k", "J", "K"},
  {"e", "f", "E", "F"}, {"t", "u", "T", "U"}, {"s", "t", "S", "T"}, {"t", "u", "T", "U"},
  {"r", "s", "R", "S"}, {"e", "f", "E", "F"}, {"a", "b", "A", "B"}, {"m", "n", "M", "N"},
}

local function is_type(s, rows)
  if type(s) ~= "string" or #s ~= #rows then
    return false
  end
  local prefix = ""
  for _, row in ipairs(rows) do
    local matched = false
    for i = 1, #row, 2 do
      local candidate = prefix .. row[i]
      if candidate <= s and s < prefix .. row[i + 1] then
        prefix = candidate
        matched = true
        break
      end
    end
    if not matched then
      return false
    end
  end
  return prefix == s
end

local hs = {}
local spec = obj.spec
-- The version is not looked at, as the operator does: a state.jetstream Component of an
-- unsupported version is the operator's, and its annotations say UnsupportedVersion (Degraded).
local what, resource = "Bucket", "keyvaluebucket"
if spec ~= nil and is_type(spec.type, PUBSUB_JETSTREAM) then
  what, resource = "Stream", "jetstreamstream"
elseif spec == nil or not is_type(spec.type, STATE_JETSTREAM) then
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
  hs.message = "Waiting for jetstream-kv-operator to provision the " .. resource
  return hs
end
if generation ~= nil and observed ~= nil and observed ~= generation then
  hs.message = "Waiting for jetstream-kv-operator to observe generation " .. tostring(generation)
  return hs
end

local detail = "; see kubectl describe " .. resource .. " " .. tostring(obj.metadata.name)
if ready == "true" then
  hs.status = "Healthy"
  hs.message = what .. " ready (" .. reason .. ")"
elseif ready == "false" and transient[reason] then
  hs.message = what .. " not ready yet, retrying: " .. reason .. detail
elseif ready == "false" then
  hs.status = "Degraded"
  if reason == "" then
    reason = "NotReady"
  end
  hs.message = what .. " not ready: " .. reason .. detail
else
  hs.message = what .. " readiness unknown (" .. reason .. ")"
end
return hs

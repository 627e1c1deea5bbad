-- Argo CD health check of a jetstreamkv.io/KeyValueBucket and of a jetstreamkv.io/JetStreamStream
-- (jetstream-kv-operator): both carry the same kstatus conditions.
--
-- Reads the kstatus conditions the operator writes:
--   Healthy      Ready=True for the current generation;
--   Degraded     Stalled=True (only a change of the Component or its Secrets helps), or
--                Ready=False with a reason that needs such a change;
--   Progressing  no status yet, a generation not observed yet, Reconciling=True (a transient
--                failure, e.g. NATS unreachable, retried with back-off), anything else.
-- Install: deploy/argocd/argocd-cm.yaml. Source of truth: this file.

-- Reasons that only a change of the Component (or its Secrets) fixes: the operator sets
-- Stalled=True with them; listed here too for a status written without Stalled.
local needs_change = {
  UnsupportedVersion = true, DuplicateMetadata = true, EnvRefUnsupported = true,
  SecretStoreUnsupported = true, MissingNatsURL = true, InvalidNatsURL = true,
  MissingBucket = true, InvalidBucketName = true, JwtWithoutSeed = true, SeedWithoutJwt = true,
  UnresolvableTemplate = true, SecretNotFound = true, SecretAccessDenied = true,
  JwtMalformed = true, JwtNotUser = true, JwtIssuerNotAccount = true, JwtExpired = true,
  JwtSignatureInvalid = true, SeedMalformed = true, SeedNotUser = true,
  SeedDoesNotMatchJwt = true, InvalidAnnotation = true, UnknownAnnotation = true,
  ReservedMetadataKey = true, InapplicableAnnotation = true, StreamOwnedElsewhere = true,
  NotAKeyValueBucket = true, ConfigMismatch = true, DataLossRefused = true,
  ImmutableFieldChanged = true, UnsupportedByServer = true, BucketOwnedElsewhere = true,
  AuthorizationFailed = true, TlsFailed = true, JetStreamDisabled = true,
  AccountLimitsExceeded = true, NoSuitablePlacement = true,
  TooMuchMetadata = true, ServerNotAllowed = true, NamespacePrefixRequired = true, NatsProtocolViolation = true,
  StreamListingTooLong = true, AuditMode = true,
  ProvisioningCredentialsInvalid = true, AppPermissionDenied = true,
  MintedSecretReference = true, MintingNotAllowed = true, MintingCredentialsInvalid = true,
  MintedSecretConflict = true, MintingNotSupported = true, NatsPermissionDenied = true,
  QuotaExceeded = true,
  TlsCertWithoutKey = true, TlsKeyWithoutCert = true, TlsClientAuthUnsupported = true,
  InvalidStreamName = true, InvalidConsumerName = true, InvalidSubject = true, OverlappingSubjects = true,
  TooManySubjects = true, WorkQueueRefused = true, NoSubjects = true, SubjectOverlap = true,
  SubjectsNotCovered = true, TopicsNotCovered = true, StreamNotUsable = true, ConsumerMismatch = true,
  DeadLetterSubscriptionUnreachable = true,
}

local function describe(c)
  local text = c.reason or c.type
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local hs = {
  status = "Progressing",
  message = "Waiting for jetstream-kv-operator to report",
}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end

local found = {}
for _, c in ipairs(obj.status.conditions) do
  if c.type ~= nil then
    found[c.type] = c
  end
end
local ready, stalled, reconciling = found["Ready"], found["Stalled"], found["Reconciling"]

local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if observed == nil and ready ~= nil then
  observed = ready.observedGeneration
end
if generation ~= nil and observed ~= nil and observed ~= generation then
  hs.message = "Waiting for jetstream-kv-operator to observe generation " .. tostring(generation)
  return hs
end

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
elseif reconciling ~= nil and reconciling.status == "True" then
  hs.message = describe(reconciling)
elseif ready == nil then
  hs.message = "Waiting for the Ready condition"
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
elseif ready.status == "False" and needs_change[ready.reason] then
  hs.status = "Degraded"
  hs.message = describe(ready)
else
  hs.message = describe(ready)
end
return hs

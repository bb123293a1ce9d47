-- Argo CD health check of tributary.dev/v1alpha1 StreamingEnrichment, read from the status the
-- Tributary operator writes: status.observedGeneration, the Ready, Progressing and Degraded
-- conditions (each carries the generation it describes), status.pendingOperation and
-- status.replicas. Install: docs/argocd.md. Uses no Lua standard library beyond Argo CD's
-- defaults (argocd-cm checks run without the string library).
--
-- 1. Degraded: Degraded=True for the current generation (message: its reason and message).
-- 2. Progressing until the operator has reported on the current generation (no status, an older
--    status.observedGeneration, or no Ready condition for it).
-- 3. Suspended: spec.suspend and no job pod left (status.replicas and readyReplicas 0).
-- 4. Healthy: Ready=True, Progressing not True, no pendingOperation.
-- 5. Progressing otherwise (a rollout, a savepoint upgrade or rescale, scaling to zero): the
--    Progressing condition's reason and message, else the Ready condition's.

local hs = {}

local function find(conditions, type)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

-- "Reason: message", or whichever of the two is set.
local function describe(c)
  local reason = c.reason or ""
  local message = c.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if message ~= "" then
    return message
  end
  if reason ~= "" then
    return reason
  end
  return c.type .. " is " .. tostring(c.status)
end

local generation = obj.metadata.generation
local status = obj.status or {}
local spec = obj.spec or {}
local observed = status.observedGeneration

-- Whether a condition describes the current spec: by its own observedGeneration, else by the
-- status'. (A failed reconcile records Degraded for the new generation before the status'
-- observedGeneration moves.)
local function current(c)
  if c == nil then
    return false
  end
  local of = c.observedGeneration
  if of == nil then
    of = observed
  end
  if generation == nil then
    return true
  end
  return of ~= nil and of >= generation
end

local function isTrue(c)
  return c ~= nil and c.status == "True" and current(c)
end

local degraded = find(status.conditions, "Degraded")
local ready = find(status.conditions, "Ready")
local progressing = find(status.conditions, "Progressing")
local pending = status.pendingOperation

if isTrue(degraded) then
  hs.status = "Degraded"
  hs.message = describe(degraded)
  return hs
end

local reported = generation == nil or (observed ~= nil and observed >= generation)
if not reported or not current(ready) then
  hs.status = "Progressing"
  local what = "Waiting for the Tributary operator to reconcile the resource"
  if generation ~= nil then
    what = "Waiting for the Tributary operator to reconcile generation " .. generation
  end
  if observed ~= nil and not reported then
    what = what .. " (status.observedGeneration is " .. observed .. ")"
  end
  hs.message = what
  return hs
end

if spec.suspend == true and (status.replicas or 0) == 0 and (status.readyReplicas or 0) == 0 then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true: the job is scaled to zero and its state volumes are kept"
  if pending ~= nil then
    hs.message = hs.message .. "; the " .. tostring(pending.kind) .. " in flight (phase "
      .. tostring(pending.phase) .. ", savepoint " .. tostring(pending.savepointId)
      .. ") goes on when spec.suspend is false"
  end
  return hs
end

if ready.status == "True" and not isTrue(progressing) and pending == nil then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
if isTrue(progressing) then
  hs.message = describe(progressing)
else
  hs.message = describe(ready)
end
return hs

-- Argo CD health of an Atrium TrainingRun (resource.customizations.health.atrium.dev_TrainingRun).
-- A run is a job: Succeeded is Healthy, Failed is Degraded, Canceled is Suspended, Queued is
-- Suspended (waiting for an instance of its compute cluster), Starting and Running are Progressing.
local hs = { status = "Progressing", message = "Waiting for the Atrium operator to admit the run" }
if obj.status == nil or obj.status.phase == nil then
  return hs
end
local phase = obj.status.phase
local reason_of = function()
  for _, c in ipairs(obj.status.conditions or {}) do
    if c.type == "Ready" and c.message ~= nil and c.message ~= "" then
      return c.message
    end
  end
  return nil
end
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "Succeeded"
  if obj.status.registeredModel ~= nil then
    hs.message = "Succeeded; registered model " .. obj.status.registeredModel
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  local f = obj.status.failure
  if f ~= nil then
    hs.message = (f.reason or "Failed") .. ": " .. (f.message or "")
    if f.exitCode ~= nil then
      hs.message = hs.message .. " (exit code " .. tostring(f.exitCode) .. ")"
    end
  else
    hs.message = reason_of() or "Failed"
  end
elseif phase == "Canceled" then
  hs.status = "Suspended"
  hs.message = "Canceled"
elseif phase == "Queued" then
  hs.status = "Suspended"
  hs.message = reason_of() or "Queued: waiting for an instance of its compute cluster"
else
  hs.status = "Progressing"
  hs.message = phase
end
return hs

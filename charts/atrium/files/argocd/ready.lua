-- Argo CD health of the Atrium kinds that report a Ready condition: Workspace, InstanceType,
-- ComputeCluster, Model and ModelDeployment (resource.customizations.health.atrium.dev_<Kind>).
-- Healthy when Ready is True for the latest spec. Ready=False is Progressing while the reason says
-- the object is on its way (the operator's waiting reasons below, and Waiting…, …Pending,
-- Progressing, Starting, RollingOut), and Degraded when a person has to act (a conflict, a missing
-- reference, a failure).
-- The operator's waiting reasons (atrium::controller::WAITING_REASONS; a test keeps them in step).
local waiting = {
  DeploymentNotReady = true, RouterNotReady = true, LoadBalancerPending = true, ModelNotReady = true,
  StorageNotReady = true, InstanceTypePending = true, NamespaceTerminating = true,
}
local hs = { status = "Progressing", message = "Waiting for the Atrium operator to report status" }
if obj.status == nil then
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.message = "The operator has not yet reconciled the latest spec"
  return hs
end
if obj.status.conditions == nil then
  return hs
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    local message = c.message or ""
    if c.reason ~= nil and c.reason ~= "" then
      message = c.reason .. ": " .. message
    end
    if c.status == "True" then
      return { status = "Healthy", message = message }
    end
    local reason = c.reason or ""
    if c.status == "Unknown" or waiting[reason] or reason:find("^Waiting") or reason:find("Pending$")
      or reason == "Progressing" or reason == "Starting" or reason == "RollingOut" then
      return { status = "Progressing", message = message }
    end
    return { status = "Degraded", message = message }
  end
end
return hs

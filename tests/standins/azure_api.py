"""A local stand-in for Azure Resource Manager, enough for the azure provider's real SDK clients.

It speaks ARM's paths (`/subscriptions/{sub}/resourceGroups/{rg}/providers/{ns}/{type}/{name}`),
answers with ARM's JSON shapes and error envelope (`{"error": {"code", "message"}}`), runs VM
creation, deletion and power actions as long-running operations behind an `Azure-AsyncOperation`
URL (already finished when first polled), and behaves like ARM where the provider depends on it:
`customData` is never returned and cannot change after creation, a NIC held by a VM or an IP held
by a NIC cannot be deleted, deleting a VM takes its OS disk when `deleteOption` says so, and
deleting what does not exist answers 204. Every request is recorded, and faults can be injected.
"""

from __future__ import annotations

import copy
import itertools
import re
import time
import uuid
from typing import Any

from azure.core.credentials import AccessToken

from tests.standins.base import Fault, Recorded, StandIn

TOKEN = "fake-token"

NSG_DEFAULT_RULES = [
    ("AllowVnetInBound", "Inbound", "Allow", 65000, "VirtualNetwork"),
    ("AllowAzureLoadBalancerInBound", "Inbound", "Allow", 65001, "AzureLoadBalancer"),
    ("DenyAllInBound", "Inbound", "Deny", 65500, "*"),
    ("AllowVnetOutBound", "Outbound", "Allow", 65000, "VirtualNetwork"),
    ("AllowInternetOutBound", "Outbound", "Allow", 65001, "*"),
    ("DenyAllOutBound", "Outbound", "Deny", 65500, "*"),
]


Call = Recorded  # what tests call a recorded request here


class FakeCredential:
    """A TokenCredential that never talks to Entra ID."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        if self.error is not None:
            raise self.error
        return AccessToken(TOKEN, int(time.time()) + 365 * 24 * 3600)


class ArmError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class AzureStandIn(StandIn):
    """ARM on 127.0.0.1:<free port>; `url` is the provider's `endpoint`."""

    def __init__(self, subscription_id: str, location: str = "eastus") -> None:
        super().__init__()
        self.subscription_id = subscription_id
        self.location = location
        self.resources: dict[str, dict[str, Any]] = {}  # lower-case resource id -> resource
        self._hidden: dict[str, dict[str, Any]] = {}  # write-only fields (customData) by id
        self._power: dict[str, str] = {}  # VM id -> PowerState code suffix
        self._operations: dict[str, dict[str, Any]] = {}
        self._ip_numbers = itertools.count(10)
        self._private_numbers = itertools.count(4)

    @property
    def calls(self) -> list[Recorded]:
        return self.requests

    def path_matches(self, pattern: str, path: str) -> bool:
        return pattern.lower() in path.lower()

    # -- what tests use

    def fail(  # type: ignore[override]
        self,
        method: str,
        path_contains: str,
        status: int,
        code: str,
        message: str = "",
        *,
        headers: dict[str, str] | None = None,
        in_operation: bool = False,
        times: int = 1,
    ) -> Fault:
        """Answer the next matching request(s) with an ARM error instead."""
        return super().fail(
            method,
            path_contains,
            status,
            code,
            message or f"{code} (injected by the stand-in)",
            headers=headers or {},
            in_operation=in_operation,
            times=times,
        )

    def forget(self, resource_id: str) -> None:
        """The resource disappears behind the provider's back."""
        with self.lock:
            self.resources.pop(resource_id.lower(), None)

    def seed(self, resource_id: str, resource: dict[str, Any], power: str = "running") -> None:
        """Put a resource there as if someone else had made it."""
        with self.lock:
            self.resources[resource_id.lower()] = {**resource, "id": resource_id}
            if "/virtualmachines/" in resource_id.lower():
                self._power[resource_id.lower()] = power

    def rg_id(self, rg: str) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{rg}"

    def resource_id(self, rg: str, kind: str, name: str) -> str:
        """`kind` like "Microsoft.Compute/virtualMachines"."""
        return f"{self.rg_id(rg)}/providers/{kind}/{name}"

    def has(self, resource_id: str) -> bool:
        with self.lock:
            return resource_id.lower() in self.resources

    def calls_of(self, method: str, since: int = 0) -> list[Call]:
        with self.lock:
            return [c for c in self.requests[since:] if c.method == method.upper()]

    def mark(self) -> int:
        """Where the record stands now, for `calls_of(..., since=mark)`."""
        with self.lock:
            return len(self.requests)

    # -- HTTP

    def answer(self, rec: Recorded) -> tuple[int, dict[str, str], Any]:
        status, headers, body = self._answer(rec)
        return status, {**headers, "x-ms-request-id": str(uuid.uuid4())}, body

    def _answer(self, rec: Recorded) -> tuple[int, dict[str, str], Any]:
        if rec.headers.get("authorization") != f"Bearer {TOKEN}":
            return _error(401, "AuthenticationFailed", "no valid bearer token")
        fault = self.take_fault(rec)
        if fault is not None and not fault.in_operation:
            return _error(fault.status, fault.code, fault.message, fault.headers)
        try:
            return self._route(rec.method, rec.path, rec.query, rec.body, fault)
        except ArmError as err:
            return _error(err.status, err.code, err.message)

    # -- ARM

    def _route(
        self, method: str, path: str, query: dict[str, str], body: Any, fault: Fault | None
    ) -> tuple[int, dict[str, str], Any]:
        lower = path.lower()
        sub = f"/subscriptions/{self.subscription_id}".lower()
        if not lower.startswith(sub):
            raise ArmError(404, "SubscriptionNotFound", f"no subscription in {path}")
        m = re.fullmatch(
            r"/providers/microsoft\.\w+/locations/[^/]+/operations/([^/]+)", lower[len(sub) :]
        )
        if m and method == "GET":
            return self._operation(m.group(1))
        m = re.fullmatch(r"/resourcegroups/([^/]+)(/.*)?", lower[len(sub) :])
        if not m:
            raise ArmError(404, "NotFound", f"no route for {method} {path}")
        rg_key = f"{sub}/resourcegroups/{m.group(1)}"
        rest = m.group(2) or ""
        if not rest:
            return self._resource_group(method, path, rg_key, body)
        if rg_key not in self.resources:
            raise ArmError(
                404, "ResourceGroupNotFound", f"Resource group '{m.group(1)}' could not be found."
            )
        m = re.fullmatch(r"/providers/([^/]+)/([^/]+)(?:/([^/]+)(?:/([^/]+))?)?", rest)
        if not m:
            raise ArmError(404, "NotFound", f"no route for {method} {path}")
        namespace, kind, name, action = m.groups()
        type_key = f"{namespace}/{kind}"
        if name is None:
            if method != "GET":
                raise ArmError(405, "MethodNotAllowed", f"{method} on a collection")
            prefix = lower + "/"
            items = [
                self._view(k)
                for k in self.resources
                if k.startswith(prefix) and "/" not in k[len(prefix) :]
            ]
            return 200, {}, {"value": items}
        key = lower if action is None else lower.rsplit("/", 1)[0]
        path_id = path if action is None else path.rsplit("/", 1)[0]
        if action is not None:
            return self._vm_action(method, key, action, query, fault)
        if method == "GET":
            if key not in self.resources:
                raise ArmError(
                    404,
                    "ResourceNotFound",
                    f"The Resource '{namespace}/{kind}/{name}' under resource group "
                    f"'{rg_key.rsplit('/', 1)[-1]}' was not found.",
                )
            return 200, {}, self._view(key, expand=query.get("$expand"))
        if method == "PUT":
            return self._put(type_key, key, path_id, name, body, fault)
        if method == "DELETE":
            return self._delete(type_key, key)
        raise ArmError(405, "MethodNotAllowed", f"{method} {path}")

    def _resource_group(
        self, method: str, path: str, key: str, body: Any
    ) -> tuple[int, dict[str, str], Any]:
        name = path.rsplit("/", 1)[-1]
        if method == "GET":
            if key not in self.resources:
                raise ArmError(
                    404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found."
                )
            return 200, {}, self.resources[key]
        if method == "PUT":
            existed = key in self.resources
            if existed and self.resources[key]["location"] != body["location"]:
                raise ArmError(
                    409, "InvalidResourceGroupLocation", "the resource group is elsewhere"
                )
            self.resources[key] = {
                "id": path,
                "name": name,
                "type": "Microsoft.Resources/resourceGroups",
                "location": body["location"],
                "tags": body.get("tags") or {},
                "properties": {"provisioningState": "Succeeded"},
            }
            return (200 if existed else 201), {}, self.resources[key]
        raise ArmError(405, "MethodNotAllowed", f"{method} on a resource group")

    def _view(self, key: str, expand: str | None = None) -> dict[str, Any]:
        resource = copy.deepcopy(self.resources[key])
        if expand and expand.lower() == "instanceview" and key in self._power:
            resource["properties"]["instanceView"] = self._instance_view(key)
        return resource

    def _instance_view(self, key: str) -> dict[str, Any]:
        state = self.resources[key]["properties"]["provisioningState"]
        statuses = [
            {
                "code": f"ProvisioningState/{state.lower()}",
                "level": "Info" if state == "Succeeded" else "Error",
                "displayStatus": f"Provisioning {state.lower()}",
            }
        ]
        if state == "Succeeded":
            power = self._power[key]
            statuses.append(
                {"code": f"PowerState/{power}", "level": "Info", "displayStatus": f"VM {power}"}
            )
        return {"computerName": self.resources[key]["name"], "statuses": statuses}

    def _exists_ref(self, ref: dict[str, Any] | None, what: str) -> str:
        ref_id = (ref or {}).get("id")
        if not ref_id:
            raise ArmError(400, "InvalidRequestFormat", f"{what} needs an id")
        low = ref_id.lower()
        if "/subnets/" in low:
            vnet_key, subnet = low.split("/subnets/", 1)
            subnets = (self.resources.get(vnet_key) or {}).get("properties", {}).get("subnets", [])
            if any(s["name"].lower() == subnet for s in subnets):
                return low
        elif low in self.resources:
            return low
        raise ArmError(
            400,
            "InvalidResourceReference",
            f"Resource {ref_id} referenced by {what} was not found.",
        )

    def _put(
        self, type_key: str, key: str, path_id: str, name: str, body: Any, fault: Fault | None
    ) -> tuple[int, dict[str, str], Any]:
        if not isinstance(body, dict) or "location" not in body:
            raise ArmError(400, "LocationRequired", "The location property is required.")
        existed = key in self.resources
        old = self.resources.get(key)
        props = copy.deepcopy(body.get("properties") or {})
        resource: dict[str, Any] = {
            "id": path_id,
            "name": name,
            "type": type_key.replace("microsoft.", "Microsoft."),
            "location": body["location"],
            "tags": body.get("tags") or {},
            "etag": f'W/"{uuid.uuid4()}"',
            "properties": props,
        }
        if "sku" in body:
            resource["sku"] = body["sku"]
        props["provisioningState"] = "Succeeded"
        if type_key == "microsoft.network/networksecuritygroups":
            for rule in props.get("securityRules", []):
                rule["id"] = f"{path_id}/securityRules/{rule['name']}"
                rule["properties"]["provisioningState"] = "Succeeded"
            props["defaultSecurityRules"] = [
                {
                    "name": rule,
                    "id": f"{path_id}/defaultSecurityRules/{rule}",
                    "properties": {
                        "direction": direction,
                        "access": access,
                        "priority": priority,
                        "protocol": "*",
                        "sourceAddressPrefix": source,
                        "sourcePortRange": "*",
                        "destinationAddressPrefix": "*",
                        "destinationPortRange": "*",
                    },
                }
                for rule, direction, access, priority, source in NSG_DEFAULT_RULES
            ]
        elif type_key == "microsoft.network/virtualnetworks":
            for subnet in props.get("subnets", []):
                subnet["id"] = f"{path_id}/subnets/{subnet['name']}"
                subnet_props = subnet.setdefault("properties", {})
                subnet_props["provisioningState"] = "Succeeded"
                if subnet_props.get("networkSecurityGroup"):
                    self._exists_ref(subnet_props["networkSecurityGroup"], "subnet")
        elif type_key == "microsoft.network/publicipaddresses":
            if (body.get("sku") or {}).get("name") == "Standard" and props.get(
                "publicIPAllocationMethod"
            ) != "Static":
                raise ArmError(
                    400,
                    "StandardSkuPublicIPAddressesMustBeStatic",
                    "Standard sku publicIp addresses must have static allocation.",
                )
            old_ip = (old or {}).get("properties", {}).get("ipAddress")
            props["ipAddress"] = old_ip or f"20.51.7.{next(self._ip_numbers)}"
        elif type_key == "microsoft.network/networkinterfaces":
            for config in props.get("ipConfigurations", []):
                config["id"] = f"{path_id}/ipConfigurations/{config['name']}"
                config_props = config["properties"]
                self._exists_ref(config_props.get("subnet"), "network interface")
                if config_props.get("publicIPAddress"):
                    self._exists_ref(config_props["publicIPAddress"], "network interface")
                config_props["privateIPAddress"] = f"10.44.1.{next(self._private_numbers)}"
                config_props["provisioningState"] = "Succeeded"
        elif type_key == "microsoft.compute/virtualmachines":
            return self._put_vm(key, resource, props, old, fault)
        self.resources[key] = resource
        return (200 if existed else 201), {}, copy.deepcopy(resource)

    def _put_vm(
        self,
        key: str,
        resource: dict[str, Any],
        props: dict[str, Any],
        old: dict[str, Any] | None,
        fault: Fault | None,
    ) -> tuple[int, dict[str, str], Any]:
        os_profile = props.get("osProfile") or {}
        custom_data = os_profile.pop("customData", None)
        if old is not None:
            if custom_data is not None and custom_data != self._hidden.get(key, {}).get(
                "customData"
            ):
                raise ArmError(
                    409,
                    "PropertyChangeNotAllowed",
                    "Changing property 'customData' is not allowed.",
                )
        else:
            self._hidden[key] = {"customData": custom_data}
        for nic in props.get("networkProfile", {}).get("networkInterfaces", []):
            nic_key = self._exists_ref(nic, "virtual machine")
            holder = self.resources[nic_key]["properties"].get("virtualMachine")
            if holder and holder["id"].lower() != key:
                raise ArmError(400, "NicInUse", f"{nic['id']} is attached to {holder['id']}")
        props["vmId"] = str(uuid.uuid5(uuid.NAMESPACE_URL, key))
        props["timeCreated"] = "2026-01-01T00:00:00+00:00"
        disk = props.get("storageProfile", {}).get("osDisk", {})
        disk.setdefault("osType", "Linux")
        disk_name = disk.get("name") or f"{resource['name']}_OsDisk_1"
        rg_path = resource["id"].split("/providers/", 1)[0]
        disk_id = f"{rg_path}/providers/Microsoft.Compute/disks/{disk_name}"
        disk.setdefault("managedDisk", {})["id"] = disk_id
        failed = fault is not None and fault.in_operation
        props["provisioningState"] = "Failed" if failed else "Succeeded"
        self.resources[key] = resource
        self._power.setdefault(key, "running")
        if not failed:
            self.resources[disk_id.lower()] = {
                "id": disk_id,
                "name": disk_name,
                "type": "Microsoft.Compute/disks",
                "location": resource["location"],
                "managedBy": resource["id"],
                "properties": {"provisioningState": "Succeeded", "diskState": "Attached"},
            }
            for nic in props.get("networkProfile", {}).get("networkInterfaces", []):
                self.resources[nic["id"].lower()]["properties"]["virtualMachine"] = {
                    "id": resource["id"]
                }
        headers = self._start_operation("Microsoft.Compute", fault)
        answer = copy.deepcopy(resource)
        answer["properties"]["provisioningState"] = "Creating" if old is None else "Updating"
        return (200 if old is not None else 201), headers, answer

    def _start_operation(self, namespace: str, fault: Fault | None) -> dict[str, str]:
        op = str(uuid.uuid4())
        record: dict[str, Any] = {
            "name": op,
            "startTime": "2026-01-01T00:00:00+00:00",
            "endTime": "2026-01-01T00:00:30+00:00",
            "status": "Succeeded",
        }
        if fault is not None and fault.in_operation:
            record["status"] = "Failed"
            record["error"] = {"code": fault.code, "message": fault.message}
        self._operations[op] = record
        url = (
            f"{self.url}/subscriptions/{self.subscription_id}/providers/{namespace}/locations/"
            f"{self.location}/operations/{op}?api-version=2026-04-01"
        )
        return {"Azure-AsyncOperation": url}

    def _operation(self, op: str) -> tuple[int, dict[str, str], Any]:
        record = self._operations.get(op)
        if record is None:
            raise ArmError(404, "NotFound", f"no operation {op}")
        return 200, {}, record

    def _delete(self, type_key: str, key: str) -> tuple[int, dict[str, str], Any]:
        resource = self.resources.get(key)
        if resource is None:
            return 204, {}, None
        props = resource.get("properties", {})
        if type_key == "microsoft.network/networkinterfaces":
            holder = props.get("virtualMachine")
            if holder and holder["id"].lower() in self.resources:
                raise ArmError(
                    400, "NicInUse", f"Network Interface {resource['id']} is used by {holder['id']}"
                )
        if type_key == "microsoft.network/publicipaddresses":
            for other in self.resources.values():
                for config in other.get("properties", {}).get("ipConfigurations", []) or []:
                    ip_ref = config.get("properties", {}).get("publicIPAddress") or {}
                    if ip_ref.get("id", "").lower() == key:
                        raise ArmError(
                            400,
                            "PublicIPAddressInUse",
                            f"Public IP address {resource['id']} is in use by {other['id']}",
                        )
        del self.resources[key]
        if type_key == "microsoft.compute/virtualmachines":
            self._power.pop(key, None)
            self._hidden.pop(key, None)
            disk = props.get("storageProfile", {}).get("osDisk", {})
            if disk.get("deleteOption") == "Delete":
                self.resources.pop(disk["managedDisk"]["id"].lower(), None)
            for nic in props.get("networkProfile", {}).get("networkInterfaces", []):
                nic_resource = self.resources.get(nic["id"].lower())
                if nic_resource is not None:
                    nic_resource["properties"].pop("virtualMachine", None)
        namespace = "Microsoft.Compute" if "compute" in type_key else "Microsoft.Network"
        return 202, self._start_operation(namespace, None), None

    def _vm_action(
        self, method: str, key: str, action: str, query: dict[str, str], fault: Fault | None
    ) -> tuple[int, dict[str, str], Any]:
        if "/providers/microsoft.compute/virtualmachines/" not in key:
            raise ArmError(404, "NotFound", f"no action {action} here")
        if key not in self.resources:
            raise ArmError(404, "ResourceNotFound", f"The Resource '{key}' was not found.")
        if method == "GET" and action == "instanceview":
            return 200, {}, self._instance_view(key)
        after = {
            "start": "running",
            "restart": "running",
            "deallocate": "deallocated",
            "poweroff": "stopped",
        }.get(action)
        if method != "POST" or after is None:
            raise ArmError(404, "NotFound", f"no action {method} {action}")
        if action == "restart" and self._power[key] != "running":
            raise ArmError(409, "OperationNotAllowed", "Cannot restart a VM that is not running.")
        self._power[key] = after
        return 202, self._start_operation("Microsoft.Compute", fault), None


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    return status, dict(headers or {}), {"error": {"code": code, "message": message}}

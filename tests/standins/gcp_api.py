"""A stand-in for the Compute Engine REST API (`/compute/v1/projects/...`) on a local port.

It keeps instances, firewall rules and operations in memory, answers in the API's JSON shapes,
honours `requestId` (the same id returns the same operation), and records every request so tests
can assert exactly what a driver sent. Faults are queued per request: an HTTP error in Google's
`{"error": {"code", "message", "errors": [{"reason"}]}}` form, or an operation that ends in error.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.standins.base import Recorded, StandIn

GOOGLE = "https://www.googleapis.com/compute/v1"
_FILTER = re.compile(r'^\(?\s*labels\.([-\w]+)\s*=\s*"?([-\w]*)"?\s*\)?$')


@dataclass
class OperationFault:
    code: str
    message: str
    http_status: int
    leave_instance: bool  # the instance exists although the operation failed


class ApiError(Exception):
    def __init__(
        self, status: int, reason: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message
        self.headers = headers or {}


def error_body(status: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
        }
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class ComputeStandIn(StandIn):
    def __init__(self) -> None:
        super().__init__()
        self.images: dict[tuple[str, str], dict[str, Any]] = {}
        self.firewalls: dict[tuple[str, str], dict[str, Any]] = {}
        self.instances: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.request_ids: dict[str, str] = {}
        self.insert_faults: list[OperationFault] = []
        self.polls_before_done = 0  # each new operation needs this many waits/gets to finish
        self._ids = itertools.count(1000)
        self._addresses = itertools.count(10)
        self.add_image("debian-cloud", "debian-12", "debian-12-bookworm-v20261111")

    def path_matches(self, pattern: str, path: str) -> bool:
        return re.search(pattern, path) is not None

    # -- test controls

    def add_image(self, project: str, family: str, name: str, disk_size_gb: int = 10) -> None:
        self.images[(project, family)] = {
            "kind": "compute#image",
            "id": str(next(self._ids)),
            "name": name,
            "family": family,
            "status": "READY",
            "diskSizeGb": str(disk_size_gb),
            "architecture": "X86_64",
            "selfLink": f"{GOOGLE}/projects/{project}/global/images/{name}",
        }

    def fail_next_insert(
        self, code: str, message: str = "", http_status: int = 503, leave_instance: bool = False
    ) -> None:
        """The next instance insert's operation ends DONE with this error."""
        self.insert_faults.append(
            OperationFault(code, message or f"{code} (stand-in)", http_status, leave_instance)
        )

    def calls(self, method: str | None = None, path: str = "") -> list[Recorded]:
        return self.recorded(method, lambda p: re.search(path, p) is not None)

    def age_operations(self, by: timedelta) -> None:
        """Every operation so far started `by` earlier: time passes for the request ids too."""
        with self.lock:
            for op in self.operations.values():
                started = datetime.fromisoformat(op["insertTime"]) - by
                op["insertTime"] = started.isoformat(timespec="milliseconds")

    def put_instance(
        self, project: str, zone: str, body: dict[str, Any], status: str = "RUNNING"
    ) -> dict[str, Any]:
        with self.lock:
            return self._make_instance(project, zone, body, status)

    # -- serving

    def answer(self, rec: Recorded) -> tuple[int, dict[str, str], Any]:
        status, payload, headers = self.handle(rec.method, rec.path, rec.query, rec.body)
        return status, headers, payload

    def handle(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            fault = self.take_fault(Recorded(method, path, query, {}, body))
            try:
                if fault is not None and not fault.after:
                    raise ApiError(fault.status, fault.code, fault.message, fault.headers)
                answer = self._route(method, path, query, body)
                if fault is not None:
                    raise ApiError(fault.status, fault.code, fault.message, fault.headers)
                return 200, answer, {}
            except ApiError as err:
                return err.status, error_body(err.status, err.reason, err.message), err.headers

    # -- the API

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> Any:
        m = re.fullmatch(r"/compute/v1/projects/([^/]+)/(.*)", path)
        if not m:
            raise ApiError(404, "notFound", f"The requested URL {path} was not found.")
        project, rest = m.groups()
        routes: list[tuple[str, str, Any]] = [
            ("GET", r"global/images/family/([^/]+)", self._image_from_family),
            ("GET", r"global/firewalls/([^/]+)", self._get_firewall),
            ("POST", r"global/firewalls", self._insert_firewall),
            ("PUT", r"global/firewalls/([^/]+)", self._update_firewall),
            ("GET", r"global/operations/([^/]+)", self._get_operation),
            ("POST", r"global/operations/([^/]+)/wait", self._get_operation),
            ("GET", r"zones/([^/]+)/operations/([^/]+)", self._get_zone_operation),
            ("POST", r"zones/([^/]+)/operations/([^/]+)/wait", self._get_zone_operation),
            ("GET", r"zones/([^/]+)/instances", self._list_instances),
            ("POST", r"zones/([^/]+)/instances", self._insert_instance),
            ("GET", r"zones/([^/]+)/instances/([^/]+)", self._get_instance),
            ("DELETE", r"zones/([^/]+)/instances/([^/]+)", self._delete_instance),
            (
                "POST",
                r"zones/([^/]+)/instances/([^/]+)/(start|stop|reset|resume)",
                self._instance_action,
            ),
        ]
        for verb, pattern, handler in routes:
            hit = re.fullmatch(pattern, rest)
            if verb == method and hit:
                return handler(project, *hit.groups(), query=query, body=body)
        raise ApiError(404, "notFound", f"The requested URL {path} was not found.")

    def _image_from_family(self, project: str, family: str, **_: Any) -> Any:
        image = self.images.get((project, family))
        if image is None:
            raise ApiError(
                404,
                "notFound",
                f"The resource 'projects/{project}/global/images/family/{family}' was not found",
            )
        return image

    def _get_firewall(self, project: str, name: str, **_: Any) -> Any:
        rule = self.firewalls.get((project, name))
        if rule is None:
            raise ApiError(
                404,
                "notFound",
                f"The resource 'projects/{project}/global/firewalls/{name}' was not found",
            )
        return rule

    def _insert_firewall(self, project: str, *, query: dict[str, str], body: Any) -> Any:
        name = body["name"]
        if (project, name) in self.firewalls:
            raise ApiError(
                409,
                "alreadyExists",
                f"The resource 'projects/{project}/global/firewalls/{name}' already exists",
            )
        link = f"{GOOGLE}/projects/{project}/global/firewalls/{name}"
        network = body.get("network", "global/networks/default")
        rule = {
            "kind": "compute#firewall",
            "id": str(next(self._ids)),
            "creationTimestamp": _now(),
            "direction": "INGRESS",
            "priority": 1000,
            "disabled": False,
            **body,
            "network": network
            if network.startswith("http")
            else f"{GOOGLE}/projects/{project}/{network}",
            "selfLink": link,
        }
        self.firewalls[(project, name)] = rule
        return self._operation(project, None, "insert", link, query)

    def _update_firewall(self, project: str, name: str, *, query: dict[str, str], body: Any) -> Any:
        rule = self._get_firewall(project, name)
        kept = {k: rule[k] for k in ("kind", "id", "creationTimestamp", "selfLink", "network")}
        self.firewalls[(project, name)] = {"priority": 1000, "disabled": False, **body, **kept}
        return self._operation(project, None, "update", rule["selfLink"], query)

    def _operation(
        self,
        project: str,
        zone: str | None,
        kind: str,
        target: str,
        query: dict[str, str],
        fault: OperationFault | None = None,
    ) -> dict[str, Any]:
        request_id = query.get("requestId")
        if request_id and request_id in self.request_ids:
            return self.operations[self.request_ids[request_id]]
        op_id = next(self._ids)
        name = f"operation-{op_id}-stand-in"
        where = f"zones/{zone}" if zone else "global"
        op: dict[str, Any] = {
            "kind": "compute#operation",
            "id": str(op_id),
            "name": name,
            "operationType": kind,
            "targetLink": target,
            "targetId": str(op_id + 1),
            "status": "DONE" if self.polls_before_done == 0 else "PENDING",
            "progress": 100 if self.polls_before_done == 0 else 0,
            "user": "stand-in@example.iam.gserviceaccount.com",
            "insertTime": _now(),
            "selfLink": f"{GOOGLE}/projects/{project}/{where}/operations/{name}",
            "_polls": self.polls_before_done,
        }
        if zone:
            op["zone"] = f"{GOOGLE}/projects/{project}/zones/{zone}"
        if fault is not None:
            op["error"] = {"errors": [{"code": fault.code, "message": fault.message}]}
            op["httpErrorStatusCode"] = fault.http_status
            op["httpErrorMessage"] = "SERVICE UNAVAILABLE" if fault.http_status == 503 else ""
        self.operations[name] = op
        if request_id:
            self.request_ids[request_id] = name
        return self._public(op)

    @staticmethod
    def _public(op: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in op.items() if not k.startswith("_")}

    def _advance(self, name: str) -> dict[str, Any]:
        op = self.operations.get(name)
        if op is None:
            raise ApiError(404, "notFound", f"The resource operation '{name}' was not found")
        if op["status"] != "DONE":
            op["_polls"] -= 1
            op["status"] = "RUNNING" if op["_polls"] > 0 else "DONE"
            op["progress"] = 50 if op["_polls"] > 0 else 100
        return self._public(op)

    def _get_operation(self, project: str, name: str, **_: Any) -> Any:
        return self._advance(name)

    def _get_zone_operation(self, project: str, zone: str, name: str, **_: Any) -> Any:
        return self._advance(name)

    def _list_instances(self, project: str, zone: str, *, query: dict[str, str], **_: Any) -> Any:
        wanted: tuple[str, str] | None = None
        if query.get("filter"):
            m = _FILTER.match(query["filter"])
            if not m:
                raise ApiError(
                    400, "invalid", f"Invalid value for field 'filter': '{query['filter']}'."
                )
            wanted = (m.group(1), m.group(2))
        items = [
            i
            for (p, z, _n), i in sorted(self.instances.items())
            if p == project
            and z == zone
            and (wanted is None or i.get("labels", {}).get(wanted[0]) == wanted[1])
        ]
        answer: dict[str, Any] = {
            "kind": "compute#instanceList",
            "id": f"projects/{project}/zones/{zone}/instances",
            "selfLink": f"{GOOGLE}/projects/{project}/zones/{zone}/instances",
        }
        if items:
            answer["items"] = items
        return answer

    def _make_instance(
        self, project: str, zone: str, body: dict[str, Any], status: str
    ) -> dict[str, Any]:
        name = body["name"]
        link = f"{GOOGLE}/projects/{project}/zones/{zone}/instances/{name}"
        nics = []
        for i, nic in enumerate(body.get("networkInterfaces", [])):
            configs = [{"kind": "compute#accessConfig", **c} for c in nic.get("accessConfigs", [])]
            if status == "RUNNING":
                for config in configs:
                    config["natIP"] = f"203.0.113.{next(self._addresses)}"
            network = nic.get("network", "global/networks/default")
            nics.append(
                {
                    "kind": "compute#networkInterface",
                    "name": f"nic{i}",
                    "network": f"{GOOGLE}/projects/{project}/{network}",
                    "networkIP": f"10.128.0.{next(self._addresses)}",
                    "accessConfigs": configs,
                    "fingerprint": "c3RhbmQtaW4=",
                }
            )
        disks = []
        for i, disk in enumerate(body.get("disks", [])):
            disks.append(
                {
                    "kind": "compute#attachedDisk",
                    "index": i,
                    "mode": "READ_WRITE",
                    "source": f"{GOOGLE}/projects/{project}/zones/{zone}/disks/{name}",
                    "deviceName": "persistent-disk-0",
                    "boot": disk.get("boot", False),
                    "autoDelete": disk.get("autoDelete", False),
                    "type": disk.get("type", "PERSISTENT"),
                    "diskSizeGb": disk.get("initializeParams", {}).get("diskSizeGb", "10"),
                }
            )
        machine_type = body.get("machineType", "")
        instance = {
            "kind": "compute#instance",
            "id": str(next(self._ids)),
            "creationTimestamp": _now(),
            "name": name,
            "description": body.get("description", ""),
            "tags": {**body.get("tags", {}), "fingerprint": "dGFncw=="},
            "machineType": machine_type
            if machine_type.startswith("http")
            else f"{GOOGLE}/projects/{project}/{machine_type}",
            "status": status,
            "zone": f"{GOOGLE}/projects/{project}/zones/{zone}",
            "networkInterfaces": nics,
            "disks": disks,
            "metadata": {
                "kind": "compute#metadata",
                "fingerprint": "bWV0YQ==",
                "items": body.get("metadata", {}).get("items", []),
            },
            "labels": body.get("labels", {}),
            "labelFingerprint": "bGFiZWxz",
            "selfLink": link,
        }
        self.instances[(project, zone, name)] = instance
        return instance

    def _insert_instance(self, project: str, zone: str, *, query: dict[str, str], body: Any) -> Any:
        request_id = query.get("requestId")
        if request_id and request_id in self.request_ids:
            return self._public(self.operations[self.request_ids[request_id]])
        name = body["name"]
        link = f"{GOOGLE}/projects/{project}/zones/{zone}/instances/{name}"
        if (project, zone, name) in self.instances:
            raise ApiError(
                409,
                "alreadyExists",
                f"The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists",
            )
        fault = self.insert_faults.pop(0) if self.insert_faults else None
        if fault is None or fault.leave_instance:
            self._make_instance(project, zone, body, "RUNNING")
        return self._operation(project, zone, "insert", link, query, fault)

    def _instance(self, project: str, zone: str, name: str) -> dict[str, Any]:
        instance = self.instances.get((project, zone, name))
        if instance is None:
            raise ApiError(
                404,
                "notFound",
                f"The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found",
            )
        return instance

    def _get_instance(self, project: str, zone: str, name: str, **_: Any) -> Any:
        return self._instance(project, zone, name)

    def _delete_instance(
        self, project: str, zone: str, name: str, *, query: dict[str, str], **_: Any
    ) -> Any:
        instance = self._instance(project, zone, name)
        del self.instances[(project, zone, name)]
        return self._operation(project, zone, "delete", instance["selfLink"], query)

    def _instance_action(
        self, project: str, zone: str, name: str, action: str, *, query: dict[str, str], **_: Any
    ) -> Any:
        instance = self._instance(project, zone, name)
        configs = [c for nic in instance["networkInterfaces"] for c in nic["accessConfigs"]]
        if action == "stop":
            instance["status"] = "TERMINATED"
            for config in configs:  # an ephemeral address goes with the running VM
                config.pop("natIP", None)
        elif action in ("start", "resume"):
            instance["status"] = "RUNNING"
            for config in configs:
                config.setdefault("natIP", f"203.0.113.{next(self._addresses)}")
        elif action == "reset" and instance["status"] != "RUNNING":
            raise ApiError(
                400, "resourceNotReady", f"The resource '{instance['selfLink']}' is not ready"
            )
        return self._operation(project, zone, action, instance["selfLink"], query)

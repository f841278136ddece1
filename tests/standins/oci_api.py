"""A local stand-in for OCI's Core (compute, virtual network) and Identity APIs.

It speaks the REST paths of API version 20160918 with camelCase JSON, as OCI does, keeps its
state in memory, records every request, and answers with injected faults when told to. The real
`oci` SDK clients reach it through `service_endpoint` and sign with `StandInSigner`. Only what
GradientLab's OCI provider uses is here, with OCI's own behaviour where it matters: a new VCN
comes with a default security list that opens SSH to the world, a subnet without security lists
gets that default one, a launch with a known retry token returns the instance it made before."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from oci.signer import AbstractBaseSigner

from tests.standins.base import Recorded, StandIn

API = "/20160918"
TENANCY = "ocid1.tenancy.oc1..aaaaaaaastandintenancy"
ADS = ("Uocm:US-ASHBURN-AD-1", "Uocm:US-ASHBURN-AD-2", "Uocm:US-ASHBURN-AD-3")
NETWORK_KINDS = {
    "vcns": "vcn",
    "internetGateways": "internetgateway",
    "routeTables": "routetable",
    "securityLists": "securitylist",
    "subnets": "subnet",
}
NOT_FOUND = ("NotAuthorizedOrNotFound", "Authorization failed or requested resource not found.")


class StandInSigner(AbstractBaseSigner):
    """Signs nothing; marks the request so the stand-in can tell the SDK ran its signer."""

    def __call__(self, request: Any, enforce_content_headers: bool = True) -> Any:
        request.headers["authorization"] = 'Signature version="1",keyId="stand-in"'
        return request


def save_credentials_block(block_name: str) -> None:
    """A real `OciCredentials` block with a freshly made API key: the SDK signs every request
    with it as it would against OCI (the stand-in only checks that a signature is there)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from deployments.blocks import OciCredentials

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    OciCredentials(
        user=STANDIN_CONFIG["user"],
        tenancy=STANDIN_CONFIG["tenancy"],
        fingerprint=STANDIN_CONFIG["fingerprint"],
        region="us-ashburn-1",
        private_key=pem,
    ).save(block_name, overwrite=True)


def fleet_file(fleet: str, block_name: str, compartment_id: str, url: str) -> str:
    """A fleet file with one OCI provider `oracle` on the stand-in and one host, arm-1."""
    return f"""
name: {fleet}
account: {{email: a@b.c, password: {{env: UNUSED_PASSWORD}}}}
providers:
  oracle: {{kind: oci, credentials_block: {block_name}, compartment_id: {compartment_id},
           operator_cidr: 203.0.113.0/24, endpoint: "{url}"}}
hosts:
  - {{name: arm-1, provider: oracle}}
"""


# A config the SDK's validation accepts; with StandInSigner the key file is never read.
STANDIN_CONFIG = {
    "user": "ocid1.user.oc1..aaaaaaaastandinuser",
    "tenancy": TENANCY,
    "fingerprint": "12:34:56:78:9a:bc:de:f0:12:34:56:78:9a:bc:de:f0",
    "key_file": "/nonexistent/oci_api_key.pem",
    "region": "us-ashburn-1",
}


def standard_images(compartment_id: str) -> list[dict[str, Any]]:
    """Platform images like OCI's: several versions and architectures, of different ages."""

    def image(n: int, os_version: str, arch: str, created: str, shapes: tuple[str, ...]) -> dict:
        return {
            "id": f"ocid1.image.oc1.iad.image{n}",
            "compartmentId": None,
            "displayName": f"Canonical-Ubuntu-{os_version}-{arch}{created.replace('-', '.')}-0",
            "operatingSystem": "Canonical Ubuntu",
            "operatingSystemVersion": os_version,
            "lifecycleState": "AVAILABLE",
            "launchMode": "NATIVE",
            "sizeInMBs": 47694,
            "timeCreated": f"{created}T12:00:00.000Z",
            "_shapes": shapes,
        }

    x86 = ("VM.Standard.E2.1.Micro", "VM.Standard.E4.Flex")
    arm = ("VM.Standard.A1.Flex",)
    return [
        image(1, "24.04", "", "2025-01-10", x86),
        image(2, "24.04", "", "2025-06-20", x86),  # the newest x86 24.04
        image(3, "22.04", "", "2025-07-01", x86),
        image(4, "24.04", "aarch64-", "2025-03-03", arm),
        image(5, "24.04", "aarch64-", "2025-06-21", arm),  # the newest arm 24.04
        image(6, "24.04", "", "2024-12-01", x86),
    ]


class OciStandIn(StandIn):
    prefix = API

    def __init__(self, compartment_id: str, availability_domains: tuple[str, ...] = ADS) -> None:
        super().__init__()
        self.compartment_id = compartment_id
        self.availability_domains = list(availability_domains)
        self.network: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in NETWORK_KINDS}
        self.instances: dict[str, dict[str, Any]] = {}
        self.vnics: dict[str, dict[str, Any]] = {}
        self.attachments: dict[str, dict[str, Any]] = {}
        self.images = standard_images(compartment_id)
        self.retry_tokens: dict[str, str] = {}  # token -> instance OCID
        self.provisioning_polls = 1  # reads of a new instance that still say PROVISIONING
        self.hidden_from_lists: set[str] = set()  # instances ListInstances does not show yet
        self.page_size: int | None = None
        self.reject_credentials = False
        self._ids = itertools.count(1)
        self._clock = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)

    def path_matches(self, pattern: str, path: str) -> bool:
        return re.fullmatch(pattern, path) is not None

    # -- what tests look at

    def calls(self, method: str, path: str) -> list[Recorded]:
        return self.recorded(method, lambda p: re.fullmatch(path, p) is not None)

    def add_instance(
        self,
        display_name: str,
        freeform_tags: dict[str, str],
        state: str = "RUNNING",
        shape: str = "VM.Standard.E2.1.Micro",
        shape_config: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        """An instance made outside the code under test (the console, another fleet)."""
        with self.lock:
            inst = self._new_instance(
                {
                    "availabilityDomain": self.availability_domains[0],
                    "compartmentId": self.compartment_id,
                    "displayName": display_name,
                    "shape": shape,
                    "shapeConfig": shape_config,
                    "freeformTags": freeform_tags,
                    "metadata": {},
                    "sourceDetails": {"sourceType": "image", "imageId": self.images[1]["id"]},
                    "createVnicDetails": {"subnetId": "ocid1.subnet.oc1.iad.elsewhere"},
                }
            )
            inst["_pending"] = None
            inst["lifecycleState"] = state
            if state in ("RUNNING", "STOPPED"):
                self._attach_vnic(inst)
            return self._public(inst)

    # -- the API

    def answer(self, rec: Recorded) -> tuple[int, dict[str, str], Any]:
        base = {"opc-request-id": f"standin-{len(self.requests)}"}
        if self.reject_credentials or "authorization" not in rec.headers:
            return self._error(
                401,
                "NotAuthenticated",
                "The required information to complete authentication was not provided or "
                "was incorrect.",
                base,
            )
        fault = self.take_fault(rec)
        if fault is not None:
            return self._error(fault.status, fault.code, fault.message, {**base, **fault.headers})
        try:
            status, extra, body = self._route(rec)
        except _Answer as answer:
            return self._error(answer.status, answer.code, answer.message, base)
        return status, {**base, **extra}, body

    def _error(
        self, status: int, code: str, message: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], Any]:
        return status, headers, {"code": code, "message": message}

    def _route(self, rec: Recorded) -> tuple[int, dict[str, str], Any]:
        m, p, q = rec.method, rec.path, rec.query
        if m == "GET" and p == "/availabilityDomains":
            return self._page(
                q,
                [
                    {
                        "name": n,
                        "id": f"ocid1.availabilitydomain.oc1..ad{i}",
                        "compartmentId": q.get("compartmentId"),
                    }
                    for i, n in enumerate(self.availability_domains, 1)
                ],
            )
        if m == "GET" and p == "/images":
            return self._list_images(q)
        if p == "/instances":
            if m == "POST":
                return self._launch(rec)
            return self._page(
                q,
                [
                    self._public(i)
                    for i in self.instances.values()
                    if i["id"] not in self.hidden_from_lists
                    and _filtered(
                        i,
                        q,
                        ("compartmentId", "displayName", "availabilityDomain", "lifecycleState"),
                    )
                ],
            )
        if match := re.fullmatch(r"/instances/([^/]+)", p):
            return self._instance(rec, match.group(1))
        if m == "GET" and p == "/vnicAttachments":
            return self._page(
                q,
                [
                    _strip(a)
                    for a in self.attachments.values()
                    if _filtered(a, q, ("compartmentId", "instanceId", "availabilityDomain"))
                ],
            )
        if m == "GET" and (match := re.fullmatch(r"/vnics/([^/]+)", p)):
            vnic = self.vnics.get(match.group(1))
            if vnic is None:
                raise _Answer(404, *NOT_FOUND)
            return 200, {}, _strip(vnic)
        if match := re.fullmatch(r"/(\w+)(?:/([^/]+))?", p):
            kind, ocid = match.groups()
            if kind in NETWORK_KINDS:
                return self._network(rec, kind, ocid)
        raise _Answer(404, "NotFound", f"stand-in: no route for {m} {p}")

    def _page(self, q: dict[str, str], items: list[Any]) -> tuple[int, dict[str, str], Any]:
        if not self.page_size:
            return 200, {}, items
        start = int(q.get("page") or 0)
        end = start + self.page_size
        headers = {"opc-next-page": str(end)} if end < len(items) else {}
        return 200, headers, items[start:end]

    def _list_images(self, q: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        found = [
            i
            for i in self.images
            if _filtered(i, q, ("operatingSystem", "operatingSystemVersion", "lifecycleState"))
            and ("shape" not in q or q["shape"] in i["_shapes"])
        ]
        if q.get("sortBy") == "TIMECREATED":
            found.sort(key=lambda i: i["timeCreated"], reverse=q.get("sortOrder") == "DESC")
        return self._page(q, [_strip(i) for i in found])

    def _now(self) -> str:
        self._clock += timedelta(seconds=1)
        return self._clock.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def _ocid(self, kind: str) -> str:
        return f"ocid1.{kind}.oc1.iad.standin{next(self._ids):04d}"

    # -- virtual network

    def _network(
        self, rec: Recorded, kind: str, ocid: str | None
    ) -> tuple[int, dict[str, str], Any]:
        store = self.network[kind]
        if ocid is None and rec.method == "GET":
            return self._page(
                rec.query,
                [
                    dict(r)
                    for r in store.values()
                    if _filtered(
                        r, rec.query, ("compartmentId", "vcnId", "displayName", "lifecycleState")
                    )
                ],
            )
        if ocid is None and rec.method == "POST":
            return 200, {"etag": "1"}, dict(self._create_network(kind, dict(rec.body)))
        resource = store.get(ocid or "")
        if resource is None:
            raise _Answer(404, *NOT_FOUND)
        if rec.method == "GET":
            return 200, {}, dict(resource)
        if rec.method == "PUT":
            resource.update(rec.body)
            return 200, {}, dict(resource)
        raise _Answer(405, "MethodNotAllowed", f"stand-in: {rec.method} {rec.path}")

    def _create_network(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        resource = {
            **body,
            "id": self._ocid(NETWORK_KINDS[kind]),
            "lifecycleState": "AVAILABLE",
            "timeCreated": self._now(),
            "definedTags": {},
            "freeformTags": body.get("freeformTags") or {},
        }
        if kind == "vcns":
            resource["cidrBlock"] = (body.get("cidrBlocks") or [body.get("cidrBlock")])[0]
            resource["cidrBlocks"] = [resource["cidrBlock"]]
            name = body.get("displayName", resource["id"])
            # OCI makes these with every VCN; the default security list lets SSH in from anywhere
            default_sl = self._create_network(
                "securityLists",
                {
                    "compartmentId": body["compartmentId"],
                    "vcnId": resource["id"],
                    "displayName": f"Default Security List for {name}",
                    "ingressSecurityRules": [
                        {
                            "protocol": "6",
                            "source": "0.0.0.0/0",
                            "sourceType": "CIDR_BLOCK",
                            "isStateless": False,
                            "tcpOptions": {"destinationPortRange": {"min": 22, "max": 22}},
                        },
                        {
                            "protocol": "1",
                            "source": "0.0.0.0/0",
                            "sourceType": "CIDR_BLOCK",
                            "isStateless": False,
                            "icmpOptions": {"type": 3, "code": 4},
                        },
                    ],
                    "egressSecurityRules": [
                        {
                            "protocol": "all",
                            "destination": "0.0.0.0/0",
                            "destinationType": "CIDR_BLOCK",
                            "isStateless": False,
                        },
                    ],
                },
            )
            default_rt = self._create_network(
                "routeTables",
                {
                    "compartmentId": body["compartmentId"],
                    "vcnId": resource["id"],
                    "displayName": f"Default Route Table for {name}",
                    "routeRules": [],
                },
            )
            resource["defaultSecurityListId"] = default_sl["id"]
            resource["defaultRouteTableId"] = default_rt["id"]
            resource["defaultDhcpOptionsId"] = self._ocid("dhcpoptions")
        if kind == "subnets":
            vcn = self.network["vcns"].get(body.get("vcnId", ""))
            if vcn is None:
                raise _Answer(404, *NOT_FOUND)
            resource.setdefault("prohibitPublicIpOnVnic", False)
            resource["securityListIds"] = body.get("securityListIds") or [
                vcn["defaultSecurityListId"]
            ]
            resource["routeTableId"] = body.get("routeTableId") or vcn["defaultRouteTableId"]
            resource["virtualRouterIp"] = "10.42.1.1"
        self.network[kind][resource["id"]] = resource
        return resource

    # -- compute

    def _new_instance(self, body: dict[str, Any]) -> dict[str, Any]:
        shape_config = body.get("shapeConfig") or {}
        inst = {
            "id": self._ocid("instance"),
            "availabilityDomain": body["availabilityDomain"],
            "compartmentId": body["compartmentId"],
            "displayName": body.get("displayName"),
            "faultDomain": "FAULT-DOMAIN-1",
            "freeformTags": body.get("freeformTags") or {},
            "definedTags": {},
            "imageId": (body.get("sourceDetails") or {}).get("imageId"),
            "launchMode": "PARAVIRTUALIZED",
            "lifecycleState": "PROVISIONING",
            "metadata": body.get("metadata") or {},
            "region": "iad",
            "shape": body["shape"],
            "shapeConfig": {
                "ocpus": shape_config.get("ocpus", 1.0),
                "memoryInGBs": shape_config.get("memoryInGBs", 1.0),
                "vcpus": 2,
                "networkingBandwidthInGbps": 0.48,
                "maxVnicAttachments": 1,
            },
            "sourceDetails": body.get("sourceDetails"),
            "timeCreated": self._now(),
            "_pending": (self.provisioning_polls, "RUNNING"),
            "_subnet": (body.get("createVnicDetails") or {}).get("subnetId"),
        }
        self.instances[inst["id"]] = inst
        return inst

    def _launch(self, rec: Recorded) -> tuple[int, dict[str, str], Any]:
        token = rec.headers.get("opc-retry-token")
        if token and token in self.retry_tokens:
            return 200, {"etag": "1"}, self._public(self.instances[self.retry_tokens[token]])
        body = rec.body
        if body.get("availabilityDomain") not in self.availability_domains:
            raise _Answer(400, "InvalidParameter", "Invalid availabilityDomain")
        if not any(body.get("shape") in i["_shapes"] for i in self.images):
            raise _Answer(400, "InvalidParameter", f"Shape {body.get('shape')} is not valid")
        inst = self._new_instance(body)
        if token:
            self.retry_tokens[token] = inst["id"]
        return 200, {"etag": "1"}, self._public(inst)

    def _instance(self, rec: Recorded, ocid: str) -> tuple[int, dict[str, str], Any]:
        inst = self.instances.get(ocid)
        if inst is None:
            raise _Answer(404, *NOT_FOUND)
        if rec.method == "GET":
            self._advance(inst)
            return 200, {"etag": "1"}, self._public(inst)
        if rec.method == "DELETE":
            if inst["lifecycleState"] != "TERMINATED":
                inst["lifecycleState"] = "TERMINATING"
                inst["_pending"] = (0, "TERMINATED")
            return 204, {}, None
        if rec.method == "POST":
            action = rec.query.get("action")
            state = inst["lifecycleState"]
            moves = {
                ("START", "STOPPED"): ("STARTING", "RUNNING"),
                ("STOP", "RUNNING"): ("STOPPING", "STOPPED"),
                ("SOFTRESET", "RUNNING"): ("STOPPING", "RUNNING"),
            }
            if (action, state) not in moves:
                raise _Answer(409, "IncorrectState", f"Cannot {action} an instance in {state}")
            now, then = moves[(str(action), state)]
            inst["lifecycleState"] = now
            inst["_pending"] = (0, then)
            return 200, {"etag": "2"}, self._public(inst)
        raise _Answer(405, "MethodNotAllowed", f"stand-in: {rec.method} {rec.path}")

    def _advance(self, inst: dict[str, Any]) -> None:
        pending = inst.get("_pending")
        if not pending:
            return
        reads, target = pending
        if reads > 0:
            inst["_pending"] = (reads - 1, target)
            return
        inst["lifecycleState"] = target
        inst["_pending"] = None
        if target == "RUNNING" and not any(
            a["instanceId"] == inst["id"] for a in self.attachments.values()
        ):
            self._attach_vnic(inst)
        if target == "TERMINATED":
            for a in self.attachments.values():
                if a["instanceId"] == inst["id"]:
                    a["lifecycleState"] = "DETACHED"
                    self.vnics.pop(a["vnicId"], None)

    def _attach_vnic(self, inst: dict[str, Any]) -> None:
        n = len(self.vnics) + 1
        vnic = {
            "id": self._ocid("vnic"),
            "availabilityDomain": inst["availabilityDomain"],
            "compartmentId": inst["compartmentId"],
            "displayName": inst["displayName"],
            "isPrimary": True,
            "lifecycleState": "AVAILABLE",
            "macAddress": f"02:00:17:00:00:{n:02x}",
            "privateIp": f"10.42.1.{10 + n}",
            "publicIp": f"129.213.40.{10 + n}",  # an Oracle Ashburn data-centre range
            "subnetId": inst["_subnet"],
            "timeCreated": self._now(),
        }
        self.vnics[vnic["id"]] = vnic
        attachment = {
            "id": self._ocid("vnicattachment"),
            "availabilityDomain": inst["availabilityDomain"],
            "compartmentId": inst["compartmentId"],
            "instanceId": inst["id"],
            "lifecycleState": "ATTACHED",
            "nicIndex": 0,
            "subnetId": inst["_subnet"],
            "vnicId": vnic["id"],
            "timeCreated": self._now(),
        }
        self.attachments[attachment["id"]] = attachment

    def _public(self, inst: dict[str, Any]) -> dict[str, Any]:
        return _strip(inst)

    def instances_named(self, display_name: str) -> Iterator[dict[str, Any]]:
        return (i for i in self.instances.values() if i["displayName"] == display_name)


class _Answer(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _strip(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if not k.startswith("_")}


def _filtered(item: dict[str, Any], q: dict[str, str], keys: tuple[str, ...]) -> bool:
    return all(item.get(k) == q[k] for k in keys if k in q)

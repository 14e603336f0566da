"""Discovery: what the group serves, in the documents kubectl and client-go ask for.

One table (``RESOURCES``) says what each resource is and which verbs it takes; every discovery
document is built from it: the legacy ones (``APIVersions`` at ``/api``, ``APIGroupList`` at
``/apis``, ``APIGroup``, ``APIResourceList``) and the aggregated one (``apidiscovery.k8s.io/v2``
``APIGroupDiscoveryList``, one request for the whole group, which kubectl 1.30+ asks for first).

The core group (``/api``) is served with version ``v1`` and no resources: the only core kind the
registry sends is ``Status``. kubectl tolerates a 404 there, but the official Python client's
discovery asks ``/api/v1`` unconditionally and fails on a 404.

``/version`` reports the Kubernetes API level the registry speaks (``v1.32.0``), with the
registry's own version as semver build metadata: kubectl parses ``gitVersion`` as semver (an
unparsable one fails ``kubectl version``) and warns when the minor levels are more than one apart.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from node_registry import __version__
from node_registry.kube.meta import KubeModel
from node_registry.passport.models import API_GROUP

VERSION = "v1"
GROUP_VERSION = f"{API_GROUP}/{VERSION}"
#: Where the group's resources are served.
API_PREFIX = f"/apis/{GROUP_VERSION}"
#: The Kubernetes release whose API conventions the registry follows (discovery v2, Table...).
KUBE_LEVEL = (1, 32)
#: The media type of aggregated discovery: kubectl lists it first in Accept, then v2beta1, then
#: plain JSON (legacy discovery). A response in another type is read as legacy.
AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
#: The category ``kubectl get ai-team`` lists. Not ``all``: ``kubectl get all`` means the
#: workloads of a namespace, and a cluster-scoped registry's nodes are not one.
CATEGORIES = ("ai-team",)


@dataclass(frozen=True, slots=True)
class Subresource:
    name: str
    kind: str
    verbs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Resource:
    """One resource of the group (cluster-scoped, as nodes are in Kubernetes)."""

    plural: str
    singular: str
    kind: str
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()


#: Every verb apiserver serves on a resource with a status subresource (#11 phase 2).
WRITABLE = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

#: What the group serves.
RESOURCES: tuple[Resource, ...] = (
    Resource(
        plural="nodepassports",
        singular="nodepassport",
        kind="NodePassport",
        verbs=WRITABLE,
        short_names=("np",),
        categories=CATEGORIES,
        subresources=(Subresource("status", "NodePassport", ("get", "patch", "update")),),
    ),
    Resource(
        plural="leases",
        singular="lease",
        kind="Lease",
        # update is the heartbeat (PUT .../leases/NAME).
        verbs=("get", "list", "update"),
        categories=CATEGORIES,
    ),
    Resource(
        plural="leaserenewals",
        singular="leaserenewal",
        kind="LeaseRenewal",
        # Create-only, as TokenReview is: a POST renews many leases and stores nothing, so it
        # is in no category (``kubectl get ai-team`` must not try to list it).
        verbs=("create",),
    ),
)


# -- the documents -------------------------------------------------------------------------


class GroupVersionForDiscovery(KubeModel):
    group_version: str = Field(alias="groupVersion")
    version: str


class APIGroup(KubeModel):
    api_version: Literal["v1"] = Field(default="v1", alias="apiVersion")
    kind: Literal["APIGroup"] = "APIGroup"
    name: str
    versions: list[GroupVersionForDiscovery]
    preferred_version: GroupVersionForDiscovery = Field(alias="preferredVersion")


class APIGroupList(KubeModel):
    api_version: Literal["v1"] = Field(default="v1", alias="apiVersion")
    kind: Literal["APIGroupList"] = "APIGroupList"
    groups: list[APIGroup]


class ServerAddressByClientCIDR(KubeModel):
    client_cidr: str = Field(alias="clientCIDR")
    server_address: str = Field(alias="serverAddress")


class APIVersions(KubeModel):
    api_version: Literal["v1"] = Field(default="v1", alias="apiVersion")
    kind: Literal["APIVersions"] = "APIVersions"
    versions: list[str]
    server_address_by_client_cidrs: list[ServerAddressByClientCIDR] = Field(
        default_factory=list, alias="serverAddressByClientCIDRs"
    )


class APIResource(KubeModel):
    name: str
    singular_name: str = Field(alias="singularName")
    namespaced: bool
    kind: str
    verbs: list[str]
    short_names: list[str] | None = Field(default=None, alias="shortNames")
    categories: list[str] | None = None


class APIResourceList(KubeModel):
    api_version: Literal["v1"] = Field(default="v1", alias="apiVersion")
    kind: Literal["APIResourceList"] = "APIResourceList"
    group_version: str = Field(alias="groupVersion")
    resources: list[APIResource]


class GroupVersionKind(KubeModel):
    group: str
    version: str
    kind: str


class APISubresourceDiscovery(KubeModel):
    subresource: str
    response_kind: GroupVersionKind = Field(alias="responseKind")
    verbs: list[str]


class APIResourceDiscovery(KubeModel):
    resource: str
    response_kind: GroupVersionKind = Field(alias="responseKind")
    scope: Literal["Cluster", "Namespaced"]
    singular_resource: str = Field(alias="singularResource")
    verbs: list[str]
    short_names: list[str] | None = Field(default=None, alias="shortNames")
    categories: list[str] | None = None
    subresources: list[APISubresourceDiscovery] | None = None


class APIVersionDiscovery(KubeModel):
    version: str
    resources: list[APIResourceDiscovery]
    freshness: Literal["Current", "Stale"] = "Current"


class APIGroupDiscovery(KubeModel):
    metadata: dict[str, Any]
    versions: list[APIVersionDiscovery]


class APIGroupDiscoveryList(KubeModel):
    api_version: Literal["apidiscovery.k8s.io/v2"] = Field(
        default="apidiscovery.k8s.io/v2", alias="apiVersion"
    )
    kind: Literal["APIGroupDiscoveryList"] = "APIGroupDiscoveryList"
    metadata: dict[str, Any] = Field(default_factory=dict)
    items: list[APIGroupDiscovery]


class VersionInfo(KubeModel):
    """``/version`` (``k8s.io/apimachinery/pkg/version.Info``)."""

    major: str
    minor: str
    git_version: str = Field(alias="gitVersion")
    git_commit: str = Field(default="", alias="gitCommit")
    git_tree_state: str = Field(default="", alias="gitTreeState")
    build_date: str = Field(default="", alias="buildDate")
    go_version: str = Field(default="", alias="goVersion")
    compiler: str = ""
    platform: str = ""


def _dump(model: KubeModel) -> dict[str, Any]:
    return model.model_dump(by_alias=True, exclude_none=True)


def _group_version() -> GroupVersionForDiscovery:
    return GroupVersionForDiscovery(group_version=GROUP_VERSION, version=VERSION)


def api_group() -> dict[str, Any]:
    gv = _group_version()
    return _dump(APIGroup(name=API_GROUP, versions=[gv], preferred_version=gv))


def api_group_list() -> dict[str, Any]:
    gv = _group_version()
    return _dump(
        APIGroupList(groups=[APIGroup(name=API_GROUP, versions=[gv], preferred_version=gv)])
    )


def core_versions(server_address: str) -> dict[str, Any]:
    cidr = ServerAddressByClientCIDR(client_cidr="0.0.0.0/0", server_address=server_address)
    return _dump(APIVersions(versions=[VERSION], server_address_by_client_cidrs=[cidr]))


def core_resources() -> dict[str, Any]:
    return _dump(APIResourceList(group_version=VERSION, resources=[]))


def api_resource_list() -> dict[str, Any]:
    resources: list[APIResource] = []
    for r in RESOURCES:
        resources.append(
            APIResource(
                name=r.plural,
                singular_name=r.singular,
                namespaced=False,
                kind=r.kind,
                verbs=list(r.verbs),
                short_names=list(r.short_names) or None,
                categories=list(r.categories) or None,
            )
        )
        resources.extend(
            APIResource(
                name=f"{r.plural}/{s.name}",
                singular_name="",
                namespaced=False,
                kind=s.kind,
                verbs=list(s.verbs),
            )
            for s in r.subresources
        )
    return _dump(APIResourceList(group_version=GROUP_VERSION, resources=resources))


def _gvk(kind: str) -> GroupVersionKind:
    return GroupVersionKind(group=API_GROUP, version=VERSION, kind=kind)


def aggregated_groups() -> dict[str, Any]:
    """``/apis`` as aggregated discovery: the group, its version, every resource, at once."""
    resources = [
        APIResourceDiscovery(
            resource=r.plural,
            response_kind=_gvk(r.kind),
            scope="Cluster",
            singular_resource=r.singular,
            verbs=list(r.verbs),
            short_names=list(r.short_names) or None,
            categories=list(r.categories) or None,
            subresources=[
                APISubresourceDiscovery(
                    subresource=s.name, response_kind=_gvk(s.kind), verbs=list(s.verbs)
                )
                for s in r.subresources
            ]
            or None,
        )
        for r in RESOURCES
    ]
    group = APIGroupDiscovery(
        metadata={"name": API_GROUP},
        versions=[APIVersionDiscovery(version=VERSION, resources=resources)],
    )
    return _dump(APIGroupDiscoveryList(items=[group]))


def aggregated_core() -> dict[str, Any]:
    """``/api`` as aggregated discovery: the core group's v1, with no resources."""
    core = APIGroupDiscovery(
        metadata={}, versions=[APIVersionDiscovery(version=VERSION, resources=[])]
    )
    return _dump(APIGroupDiscoveryList(items=[core]))


def version_info() -> dict[str, Any]:
    major, minor = KUBE_LEVEL
    return _dump(
        VersionInfo(
            major=str(major),
            minor=str(minor),
            git_version=f"v{major}.{minor}.0+node-registry-{__version__}",
            compiler="cpython",
            go_version=f"python{sys.version_info.major}.{sys.version_info.minor}",
            platform=f"{sys.platform}/{_arch()}",
        )
    )


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


# #12's resource and subresources (kube.extensions), laid over the table of #11 above.
from node_registry.kube.extensions import extend_resources  # noqa: E402

RESOURCES = extend_resources(RESOURCES)

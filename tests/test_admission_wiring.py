"""CEL admission wired into the registry (#12): every write path, embedded and over HTTP.

The policies are the examples' (``examples/policies/``), loaded from the config's
``admission.policies_path``: only agents may claim code_generation (403), a gpu_* capability
needs a gpu resource (422), team/ labels match the name and only an admin changes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import passport
from live_server import make_app, serve
from node_registry import FakeClock, Registry, load_settings
from node_registry.errors import ForbiddenError, ValidationError
from node_registry.registry.policies import UserInfo

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "examples" / "policies"
API = "/apis/ai_team.io/v1"
ADMIN = "admin-token-0123456789abcdef"
TOOL_01 = "node-tool-01-token-0123456789"
AGENT_01 = "node-agent-01-token-012345678"
ONLY_AGENTS = (
    "ValidatingAdmissionPolicy 'only-agents-generate-code' denied request: node type tool "
    "may not claim code_generation: only agents may"
)


@pytest.fixture
def registry(clock: FakeClock) -> Iterator[Registry]:
    reg = Registry(clock=clock, settings=load_settings(admission={"policies_path": POLICIES}))
    yield reg
    reg.close()


def test_the_config_names_the_policies_and_the_registry_enforces_them(registry: Registry) -> None:
    assert [p.name for p in registry.admission.policies] == [
        "gpu-capability-needs-gpu-resource",
        "only-agents-generate-code",
        "team-labels-match-name-prefix",
    ]
    registry.register(passport("agent-01", capabilities=("code_generation",)))
    with pytest.raises(ForbiddenError) as refused:
        registry.register(passport("tool-01", kind="tool", capabilities=("code_generation",)))
    assert str(refused.value) == ONLY_AGENTS
    with pytest.raises(ValidationError) as invalid:
        registry.register(passport("agent-02", capabilities=("gpu_inference",)))
    assert [(e.loc, e.message) for e in invalid.value.errors] == [
        (
            "spec.resources.gpu",
            "ValidatingAdmissionPolicy 'gpu-capability-needs-gpu-resource' denied request: "
            "capabilities gpu_inference need a gpu resource above 0 in spec.resources",
        )
    ]
    assert [e.name for e in registry.find_nodes()] == ["agent-01"]


def test_every_write_path_is_admitted(registry: Registry) -> None:
    tool = registry.register(passport("tool-01", kind="tool", capabilities=("web_search",)))
    # A runtime capability change is an UPDATE the policy sees.
    with pytest.raises(ForbiddenError, match="may not claim code_generation"):
        registry.set_capabilities(tool.node_id, [{"name": "code_generation"}])
    # A status report too: the old object carries the team label, the new one must keep it.
    labelled = passport("ai-agent-01", labels={"team/owner": "ai"})
    agent = registry.register(labelled)
    node = UserInfo("ai-agent-01", "node")
    registry.update_status(agent.node_id, current_tasks=2, user=node)
    relabel = passport("ai-agent-01", labels={"team/owner": "ai-agent"})
    with pytest.raises(ForbiddenError, match="only an admin may change a node's team/ labels"):
        registry.register(relabel, user=node)
    assert registry.register(relabel, user=UserInfo("ops", "admin")).passport.metadata.labels == {
        "team/owner": "ai-agent"
    }
    # Nothing refused was written.
    assert registry.get(tool.node_id).passport.spec.capabilities[0].name == "web_search"


#: Only an admin deletes a node labelled pinned: a policy on DELETE, reading oldObject.
PINNED_POLICY = {
    "apiVersion": "ai_team.io/v1",
    "kind": "ValidatingAdmissionPolicy",
    "metadata": {"name": "keep-pinned-nodes"},
    "spec": {
        "matchConstraints": {"operations": ["DELETE"]},
        "validations": [
            {
                "expression": '!("pinned" in oldObject.metadata.labels) || '
                'request.userInfo.role == "admin"',
                "message": "pinned nodes are deleted by admins only",
                "reason": "Forbidden",
            }
        ],
    },
}


def test_a_delete_policy_sees_the_stored_object(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(PINNED_POLICY), encoding="utf-8")
    settings = load_settings(admission={"policies_path": path})
    with Registry(clock=clock, settings=settings) as registry:
        pinned = registry.register(passport("pinned-01", labels={"pinned": "yes"}))
        with pytest.raises(ForbiddenError, match="pinned nodes are deleted by admins only"):
            registry.deregister(pinned.node_id, user=UserInfo("pinned-01", "node"))
        registry.deregister(pinned.node_id, user=UserInfo("ops", "admin"))
        assert registry.find_nodes() == []


def test_a_dry_run_delete_is_admitted_as_the_delete_would_be(tmp_path: Path) -> None:
    """#12: ``dryRun=All`` answers what the delete would: the DELETE policies run on it."""
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(PINNED_POLICY), encoding="utf-8")
    tokens = tmp_path / "tokens.yaml"
    pinned_token = "node-pinned-01-token-0123456789"
    entries = [
        {"token": ADMIN, "role": "admin", "name": "ops"},
        {"token": pinned_token, "role": "node", "node": "pinned-01"},
    ]
    tokens.write_text(yaml.safe_dump({"tokens": entries}), encoding="utf-8")
    tokens.chmod(0o600)
    app = make_app(
        clock=FakeClock(), server={"tokens_file": tokens}, admission={"policies_path": path}
    )
    url = f"{API}/nodepassports/pinned-01"
    with serve(app) as base, httpx.Client(base_url=base, timeout=10) as http:
        doc = passport("pinned-01", labels={"pinned": "yes"})
        assert http.post(f"{API}/nodepassports", json=doc, headers=_as(ADMIN)).status_code == 201
        as_node = _as(pinned_token)
        for dry in ({"params": {"dryRun": "All"}}, {"json": {"dryRun": ["All"]}}):
            refused = http.request("DELETE", url, headers=as_node, **dry)  # type: ignore[arg-type]
            assert refused.status_code == 403, refused.text
            assert refused.json()["message"].endswith("pinned nodes are deleted by admins only")
        allowed = http.delete(url, params={"dryRun": "All"}, headers=_as(ADMIN))
        assert allowed.status_code == 200, allowed.text
        assert http.get(url, headers=_as(ADMIN)).status_code == 200  # dry: still there
        assert http.delete(url, headers=as_node).status_code == 403  # and for real, the same


def test_without_policies_every_write_is_admitted(clock: FakeClock) -> None:
    with Registry(clock=clock) as registry:
        assert registry.admission.policies == ()
        registry.register(passport("tool-01", kind="tool", capabilities=("code_generation",)))


# -- over HTTP: the token's role is request.userInfo.role ------------------------------------


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tokens = tmp_path_factory.mktemp("admission") / "tokens.yaml"
    entries: list[dict[str, Any]] = [
        {"token": ADMIN, "role": "admin", "name": "ops"},
        {"token": TOOL_01, "role": "node", "node": "tool-01"},
        {"token": AGENT_01, "role": "node", "node": "ai-agent-01"},
    ]
    tokens.write_text(yaml.safe_dump({"tokens": entries}), encoding="utf-8")
    tokens.chmod(0o600)
    app = make_app(
        clock=FakeClock(),
        server={"tokens_file": tokens},
        admission={"policies_path": POLICIES},
    )
    with serve(app) as url:
        yield url


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_refusals_over_http_are_status_documents(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        doc = passport("tool-01", kind="tool", capabilities=("code_generation",))
        refused = http.post(f"{API}/nodepassports", json=doc, headers=_as(TOOL_01))
        assert refused.status_code == 403, refused.text
        status = refused.json()
        assert (status["kind"], status["reason"], status["code"]) == ("Status", "Forbidden", 403)
        assert status["message"] == ONLY_AGENTS

        gpu = passport("ai-agent-01", capabilities=("gpu_inference",))
        invalid = http.post(f"{API}/nodepassports", json=gpu, headers=_as(AGENT_01))
        assert invalid.status_code == 422, invalid.text
        assert invalid.json()["details"]["causes"] == [
            {
                "reason": "FieldValueInvalid",
                "field": "spec.resources.gpu",
                "message": "ValidatingAdmissionPolicy 'gpu-capability-needs-gpu-resource' "
                "denied request: capabilities gpu_inference need a gpu resource above 0 in "
                "spec.resources",
            }
        ]

        # The capabilities subresource is a write path too.
        tool = passport("tool-01", kind="tool", capabilities=("web_search",))
        assert http.post(f"{API}/nodepassports", json=tool, headers=_as(TOOL_01)).status_code == 201
        body = {"kind": "NodeCapabilities", "spec": {"capabilities": [{"name": "code_generation"}]}}
        changed = http.put(
            f"{API}/nodepassports/tool-01/capabilities", json=body, headers=_as(TOOL_01)
        )
        assert changed.status_code == 403, changed.text
        assert changed.json()["message"] == ONLY_AGENTS

        # The role is the token's: the node may not move its team label, the admin may.
        agent = passport("ai-agent-01", labels={"team/owner": "ai"})
        assert (
            http.post(f"{API}/nodepassports", json=agent, headers=_as(AGENT_01)).status_code == 201
        )
        moved = passport("ai-agent-01", labels={"team/owner": "ai-agent"})
        by_node = http.put(f"{API}/nodepassports/ai-agent-01", json=moved, headers=_as(AGENT_01))
        assert by_node.status_code == 403, by_node.text
        assert "only an admin may change a node's team/ labels" in by_node.json()["message"]
        by_admin = http.put(f"{API}/nodepassports/ai-agent-01", json=moved, headers=_as(ADMIN))
        assert by_admin.status_code == 200, by_admin.text


def test_the_kubernetes_writes_are_admitted_too(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10, headers=_as(ADMIN)) as http:
        tool = passport("tool-02", kind="tool", capabilities=("web_search",))
        assert http.post(f"{API}/nodepassports", json=tool).status_code == 201
        patched = http.patch(
            f"{API}/nodepassports/tool-02",
            json={"spec": {"capabilities": [{"name": "code_generation"}]}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert patched.status_code == 403, patched.text
        assert patched.json()["message"].endswith("only agents may")
        coder = passport("tool-03", kind="tool", capabilities=("code_generation",))
        dry = http.post(f"{API}/nodepassports?dryRun=All", json=coder)
        assert dry.status_code == 403, dry.text
        stored = http.get(f"{API}/nodepassports/tool-02").json()
        assert [c["name"] for c in stored["spec"]["capabilities"]] == ["web_search"]

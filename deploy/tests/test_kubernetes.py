"""The Kubernetes manifests of deploy/: the kustomize output (kubectl kustomize) and the Helm
chart rendered by Helm's own Go engine (helm-python-sdk, Helm v4 SDK), validated against the
Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields are errors), plus the
properties the appliance promises (one replica, probes, non-root, read-only root fs...).

Run by scripts/appliance-test.sh:  target/appliance/venv/bin/pytest deploy/tests
"""

import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes"
CHART = REPO / "deploy" / "helm" / "idbridge"
# A current Kubernetes release (the newest kubernetes-validate ships) and the oldest the
# chart's kubeVersion admits that the validator still has schemas for.
VERSIONS = [os.environ.get("IDBRIDGE_K8S_VERSION", kubernetes_validate.latest_version()), "1.30.0"]
# Custom resources have no schema in kubernetes-validate: checked by hand below.
CRDS = {"monitoring.coreos.com/v1/ServiceMonitor"}


def kustomize(path):
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (kubectl kustomize renders the base)")
    out = subprocess.run(
        ["kubectl", "kustomize", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def helm_render(values, name="idb", namespace="idbridge"):
    helm = pytest.importorskip("helm_python")
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name=name, namespace=namespace)
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def kind_key(doc):
    return f"{doc['apiVersion']}/{doc['kind']}"


def validate_all(docs):
    assert docs, "nothing rendered"
    for version in VERSIONS:
        for doc in docs:
            if kind_key(doc) in CRDS:
                continue
            # Raises ValidationError naming the field on any schema violation.
            kubernetes_validate.validate(doc, version, strict=True)


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def check_appliance_properties(docs):
    """What deploy/ promises for any rendering."""
    (sts,) = by_kind(docs, "StatefulSet")
    spec = sts["spec"]
    assert spec["replicas"] == 1, "the embedded store allows one process"
    (claim,) = spec["volumeClaimTemplates"]
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/var/lib/idbridge", "/etc/idbridge", "/tmp"}
    assert claim["metadata"]["name"] in {m["name"] for m in c["volumeMounts"]}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    psc, csc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e for e in c["env"]}
    assert env["IDBRIDGE_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "secret-key"
    api_key = env["IDBRIDGE_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert api_key["key"] == "api-key"
    assert api_key["name"] == env["IDBRIDGE_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"]
    # The unready-but-serving delay and the drain deadline fit in the pod's termination grace
    # period (a pod killed before its store is closed replays the WAL at the next start).
    delay = int(env["IDBRIDGE_SHUTDOWN_DELAY_SECS"]["value"])
    grace = int(env["IDBRIDGE_SHUTDOWN_GRACE_SECS"]["value"])
    assert delay > 0 and grace > 0
    assert delay + grace < pod.get("terminationGracePeriodSeconds", 30)
    assert any("secretRef" in e for e in c["envFrom"]), "SCIM tokens come from a Secret"
    # The config file comes from a ConfigMap that is rendered alongside.
    cm_names = {d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")}
    (config_vol,) = [v for v in pod["volumes"] if "configMap" in v]
    assert config_vol["configMap"]["name"] in cm_names
    assert "idbridge.toml" in by_kind(docs, "ConfigMap")[0]["data"]
    # Every Service selects the pod.
    pod_labels = spec["template"]["metadata"]["labels"]
    for svc in by_kind(docs, "Service"):
        assert svc["spec"]["selector"].items() <= pod_labels.items(), svc["metadata"]["name"]
    assert spec["serviceName"] in {s["metadata"]["name"] for s in by_kind(docs, "Service")}
    for sm in by_kind(docs, "ServiceMonitor"):
        check_service_monitor(sm, docs)


def check_service_monitor(sm, docs):
    """By hand (no CRD schema): it selects exactly one Service and scrapes its named port."""
    selector = sm["spec"]["selector"]["matchLabels"]
    matched = [
        s for s in by_kind(docs, "Service") if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert len(matched) == 1, f"ServiceMonitor selects {len(matched)} Services"
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in matched[0]["spec"]["ports"]}


def test_kustomize_base_validates():
    docs = kustomize(KUBE / "base")
    assert {d["kind"] for d in docs} == {"ServiceAccount", "ConfigMap", "Service", "StatefulSet"}
    validate_all(docs)
    check_appliance_properties(docs)


def test_kustomize_overlay_with_servicemonitor_validates():
    docs = kustomize(KUBE / "overlays" / "example")
    assert len(by_kind(docs, "ServiceMonitor")) == 1
    assert {d["metadata"].get("namespace") for d in docs} == {"idbridge"}
    validate_all(docs)
    check_appliance_properties(docs)


def test_helm_chart_defaults_validate():
    docs = helm_render({})
    assert not by_kind(docs, "Secret"), "no Secret without values"
    assert not by_kind(docs, "ServiceMonitor")
    validate_all(docs)
    check_appliance_properties(docs)


def test_helm_chart_with_every_option_validates():
    docs = helm_render(
        {
            "publicUrl": "https://sso.example.com",
            "secrets": {"secretKey": "ab" * 32, "apiKey": "sk_" + "k" * 40,
                        "scimTokens": {"ACME_OKTA_SCIM_TOKEN": "t" * 32}},
            "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
            "persistence": {"storageClassName": "fast", "size": "20Gi"},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "imagePullSecrets": [{"name": "regcred"}],
        }
    )
    secrets = {d["metadata"]["name"]: d for d in by_kind(docs, "Secret")}
    assert secrets["idb-idbridge"]["stringData"]["secret-key"] == "ab" * 32
    assert secrets["idb-idbridge"]["stringData"]["api-key"] == "sk_" + "k" * 40
    assert secrets["idb-idbridge-scim-tokens"]["stringData"]["ACME_OKTA_SCIM_TOKEN"] == "t" * 32
    (sts,) = by_kind(docs, "StatefulSet")
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["IDBRIDGE_PUBLIC_URL"]["value"] == "https://sso.example.com"
    validate_all(docs)
    check_appliance_properties(docs)


def test_helm_chart_api_key_alone_makes_a_secret_without_secret_key():
    docs = helm_render({"secrets": {"apiKey": "sk_" + "k" * 40}})
    (secret,) = by_kind(docs, "Secret")
    assert secret["stringData"] == {"api-key": "sk_" + "k" * 40}
    validate_all(docs)
    check_appliance_properties(docs)


def test_helm_chart_existing_secrets_are_referenced_not_made():
    docs = helm_render({"secrets": {"existingSecret": "mine", "secretKey": "ab" * 32,
                                    "existingScimTokensSecret": "tokens"}})
    assert not by_kind(docs, "Secret")
    (sts,) = by_kind(docs, "StatefulSet")
    c = sts["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert env["IDBRIDGE_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "mine"
    assert env["IDBRIDGE_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "mine"
    assert c["envFrom"][0]["secretRef"]["name"] == "tokens"


def test_the_validator_rejects_a_broken_manifest():
    """The schema check can fail: a misspelt field and a wrong type are both caught."""
    (sts,) = by_kind(kustomize(KUBE / "base"), "StatefulSet")
    misspelt = yaml.safe_load(yaml.safe_dump(sts))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, VERSIONS[0], strict=True)
    wrong_type = yaml.safe_load(yaml.safe_dump(sts))
    wrong_type["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, VERSIONS[0], strict=True)


def test_the_property_check_rejects_a_root_container():
    docs = kustomize(KUBE / "base")
    (sts,) = by_kind(docs, "StatefulSet")
    sts["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    with pytest.raises(AssertionError):
        check_appliance_properties(docs)


def test_helm_lint_finds_no_error():
    """`helm lint --strict` through Helm's Go SDK: only the INFO about a missing icon."""
    helm = pytest.importorskip("helm_python")
    for values in ({}, {"serviceMonitor": {"enabled": True}, "secrets": {"secretKey": "ab" * 32}}):
        report = helm.lint(str(CHART), values, strict=True)
        # severity 1 = INFO, 2 = WARNING, 3 = ERROR (helm's lint support.Severity)
        assert report["errors"] == [], report
        assert [m for m in report["messages"] if m["severity"] > 1] == [], report


def test_helm_lint_reports_a_broken_template(tmp_path):
    helm = pytest.importorskip("helm_python")
    broken = tmp_path / "idbridge"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "service.yaml").write_text("{{ .Values.service.port | nosuchfunc }}\n")
    report = helm.lint(str(broken), strict=True)
    assert report["errors"] or any(m["severity"] > 1 for m in report["messages"]), report

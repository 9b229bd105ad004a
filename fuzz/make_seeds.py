# Writes the seed corpus in fuzz/corpus/ (small, realistic inputs for each
# target). Its output is committed; rerun it only to change the seeds:
#   python3 fuzz/make_seeds.py fuzz/corpus
import base64, hashlib, hmac, io, json, os, struct, tarfile, sys

root = sys.argv[1]
def put(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

H64 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
H64b = "a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"
H128 = hashlib.sha512(b"").hexdigest()

# reference
for i, s in enumerate([
    f"docker.io/library/nginx:1.25@sha256:{H64}",
    "registry.local:5000/a/b",
    "alpine",
    "alpine:3.20",
    "localhost/app:v1",
    "localhost:5000/team/app",
    "quay.io/org/sub/img:tag",
    "index.docker.io/library/nginx:1",
    "bitnami/redis",
    f"ghcr.io/owner/repo@sha512:{H128}",
    f"sha256:{H64}",
    "v1.2.3-rc_1",
    "my__app/a.b/c--d",
    "team/**\nteam/app/web",
    "docker.io/library/*\ndocker.io/library/alpine",
    "*-rc?\n1.0-rc1",
]):
    put("reference", f"seed-{i:02}", s)

# manifest
OCI_M = "application/vnd.oci.image.manifest.v1+json"
OCI_I = "application/vnd.oci.image.index.v1+json"
D_M = "application/vnd.docker.distribution.manifest.v2+json"
D_L = "application/vnd.docker.distribution.manifest.list.v2+json"
cfg = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{H64}", "size": 2}
layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": f"sha256:{H64b}", "size": 32}
img = {"schemaVersion": 2, "mediaType": OCI_M, "config": cfg, "layers": [layer],
       "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}}
put("manifest", "oci-image", OCI_M + "\n" + json.dumps(img, indent=3))
noty = dict(img); del noty["mediaType"]
put("manifest", "oci-image-no-media-type", "\n" + json.dumps(noty))
idx = {"schemaVersion": 2, "mediaType": OCI_I, "manifests": [
    {"mediaType": OCI_M, "digest": f"sha256:{H64}", "size": 400, "platform": {"architecture": "amd64", "os": "linux"}},
    {"mediaType": OCI_M, "digest": f"sha256:{H64b}", "size": 400, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}]}
put("manifest", "oci-index", OCI_I + "; charset=utf-8\n" + json.dumps(idx))
dm = {"schemaVersion": 2, "mediaType": D_M,
      "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": f"sha256:{H64}", "size": 1469},
      "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": f"sha256:{H64b}", "size": 3623807},
                 {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": f"sha256:{H64}", "size": 5, "urls": ["https://example.invalid/l"]}]}
put("manifest", "docker-schema2", D_M + "\n" + json.dumps(dm))
dl = {"schemaVersion": 2, "mediaType": D_L, "manifests": [{"mediaType": D_M, "digest": f"sha256:{H64}", "size": 528, "platform": {"architecture": "amd64", "os": "linux"}}]}
put("manifest", "docker-list", D_L + "\n" + json.dumps(dl))
art = {"schemaVersion": 2, "mediaType": OCI_M, "artifactType": "application/vnd.example.sbom",
       "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},
       "layers": [{"mediaType": "application/spdx+json", "digest": f"sha256:{H64b}", "size": 10}],
       "subject": {"mediaType": OCI_M, "digest": f"sha256:{H64}", "size": 400}}
put("manifest", "artifact-with-subject", OCI_M + "\n" + json.dumps(art))
put("manifest", "schema1", "application/vnd.docker.distribution.manifest.v1+prettyjws\n" + json.dumps({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}))

# range: 8-byte little-endian size, then the header
for i, (size, h) in enumerate([
    (100000, "bytes=1000-1999"), (100000, "bytes=99990-"), (100000, "bytes=-500"),
    (10, "bytes=0-1,4-5"), (0, "bytes=0-0"), (1 << 20, "0-1048575"),
    (1000, "bytes 100-199/*"), (1000, "bytes 0-999/1000"), (5, "bytes=5-2"),
]):
    put("range", f"seed-{i:02}", struct.pack("<Q", size) + h.encode())

# www_authenticate
for i, s in enumerate([
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"',
    'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:owner/repo:pull"',
    'Basic realm="Registry Realm"',
    'Basic realm="x", Bearer realm="https://t.example/auth",service=reg, Negotiate abc123==',
    'Bearer realm="https://r.example/token?a=1,b=2", service="svc", scope="repository:a/b:pull,push repository:c:pull", error="insufficient_scope"',
    'BEARER Realm=https://h:5001/token, Service="my \\"quoted\\" svc"',
]):
    put("www_authenticate", f"seed-{i:02}", s)

# token: odd first byte = token / Authorization text; even = header 0xff payload, signed by the target
key = bytes([7] * 32)
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
hdr = json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode()
claims = {"iss": "berth", "sub": "alice", "aud": "berth", "iat": 1700000000, "exp": 4102444800,
          "jti": "00112233445566778899aabb", "kind": "access",
          "access": [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]}
pl = json.dumps(claims, separators=(",", ":")).encode()
si = f"{b64(hdr)}.{b64(pl)}"
tok = si + "." + b64(hmac.new(key, si.encode(), hashlib.sha256).digest())
put("token", "valid-access", b"\x01" + tok.encode())
put("token", "bearer-header", b"\x01Bearer " + tok.encode())
put("token", "basic-header", b"\x01Basic " + base64.b64encode(b"alice:s3cret"))
put("token", "alg-none", b"\x01" + f"{b64(json.dumps({'alg':'none','typ':'JWT'}).encode())}.{b64(pl)}.".encode())
put("token", "signed-claims", b"\x00" + hdr + b"\xff" + pl)
refresh = dict(claims, kind="refresh", tid="tok1", scp=["repository:team/*:pull"], pwf="abc")
put("token", "signed-refresh", b"\x00" + hdr + b"\xff" + json.dumps(refresh).encode())

# k8s_images
put("k8s_images", "deployment-cronjob.yaml", """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      initContainers:
        - name: init
          image: busybox:1.36
      containers:
        - name: web
          image: docker.io/library/nginx:1.25
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: job
              image: registry.k8s.io/pause:3.9
          restartPolicy: OnFailure
""")
put("k8s_images", "list.yaml", """apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: p}
    spec:
      containers: [{name: a, image: "quay.io/org/app@sha256:%s"}]
      ephemeralContainers: [{name: dbg, image: alpine}]
      volumes: [{name: v, image: {reference: "ghcr.io/o/data:1"}}]
  - apiVersion: apps/v1
    kind: StatefulSet
    metadata: {name: db}
    spec: {template: {spec: {containers: [{name: db, image: postgres:16}]}}}
""" % H64)
put("k8s_images", "kubevirt.yaml", """apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: vm
spec:
  template:
    spec:
      domain: {devices: {}}
      volumes:
        - name: disk
          containerDisk:
            image: quay.io/containerdisks/fedora:40
  dataVolumeTemplates:
    - metadata: {name: dv}
      spec:
        source:
          registry:
            url: docker://quay.io/containerdisks/ubuntu:22.04
""")
put("k8s_images", "anchors.json", json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "j"},
                                             "spec": {"containers": [{"name": "x", "image": "redis:7"}]}}))
put("k8s_images", "aliases.yaml", """base: &img {name: c, image: "nginx:1"}
kind: Pod
metadata: {name: a}
spec:
  containers: [*img, *img]
""")

# archive: 0x00 + a tar, or 0x01 + a layout spec
def tar_bytes(files):
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size = len(data); ti.mtime = 0; ti.mode = 0o644
            t.addfile(ti, io.BytesIO(data))
    return bio.getvalue()
layer_tar = tar_bytes([("hello.txt", b"hello\n")])
config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]}}).encode()
sha = lambda b: hashlib.sha256(b).hexdigest()
man = json.dumps({"schemaVersion": 2, "mediaType": OCI_M,
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + sha(config), "size": len(config)},
                  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + sha(layer_tar), "size": len(layer_tar)}]}).encode()
ref = "docker.io/library/hello:1"
index = json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": OCI_M, "digest": "sha256:" + sha(man), "size": len(man),
                    "annotations": {"org.opencontainers.image.ref.name": ref, "io.berth.bundle.reference": ref}}]}).encode()
oci = tar_bytes([("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index),
                 ("blobs/sha256/" + sha(man), man), ("blobs/sha256/" + sha(config), config), ("blobs/sha256/" + sha(layer_tar), layer_tar)])
put("archive", "oci-layout.tar", b"\x00" + oci)
save = tar_bytes([("manifest.json", json.dumps([{"Config": sha(config) + ".json", "RepoTags": ["hello:1"], "Layers": [sha(layer_tar) + "/layer.tar"]}]).encode()),
                  (sha(config) + ".json", config), (sha(layer_tar) + "/layer.tar", layer_tar)])
put("archive", "docker-save.tar", b"\x00" + save)
spec = "\n--\n".join([
    '{"schemaVersion":2,"manifests":[{"mediaType":"%s","digest":"$1","size":%%1,"annotations":{"org.opencontainers.image.ref.name":"docker.io/library/alpine:3.20","io.berth.bundle.reference":"docker.io/library/alpine:3.20"}}]}' % OCI_I,
    '{"schemaVersion":2,"mediaType":"%s","manifests":[{"mediaType":"%s","digest":"$2","size":%%2,"platform":{"os":"linux","architecture":"amd64"}}]}' % (OCI_I, OCI_M),
    '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$3","size":%%3},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"$4","size":%%4}]}' % OCI_M,
    '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}',
    "layer bytes",
])
put("archive", "layout-spec-index", b"\x01" + spec.encode())

# runtime_config
put("runtime_config", "registries.yaml", """mirrors:
  docker.io:
    endpoint:
      - "https://mirror.corp.example:5000"
  registry.corp.example:
    endpoint: ["https://registry.corp.example"]
    rewrite:
      "^library/(.*)": "mirror/$1"
configs:
  "mirror.corp.example:5000":
    auth:
      username: ci
      password: hunter2
    tls:
      ca_file: /etc/ssl/corp.pem
      insecure_skip_verify: false
""")
put("runtime_config", "daemon.json", json.dumps({"log-driver": "json-file", "registry-mirrors": ["https://mirror.gcr.io/"],
                                                 "insecure-registries": ["10.0.0.1:5000"], "features": {"buildkit": True}}, indent=2))
put("runtime_config", "registries.conf", """unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "mirror.lan:5000/docker.io"
insecure = true

[[registry]]
location = "quay.io"
blocked = false
""")
put("runtime_config", "hosts.toml", """server = "https://registry-1.docker.io"

[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
  ca = ["/etc/containerd/ca.crt", "/etc/ssl/extra.pem"]
  [host."http://127.0.0.1:5000".header]
    x-custom = ["1"]
""")
put("runtime_config", "config.toml", """version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["https://mirror.example"]
""")
put("runtime_config", "mirror-arg", "http://[::1]:5000\n")

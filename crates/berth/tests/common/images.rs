//! Images pushed by hand (a config and layers of given bytes) and pulled
//! back the way a client does, for the tests of caches and replicas that
//! must tell which images are still whole.

use super::*;

pub struct Image {
    pub tag: String,
    pub manifest: Vec<u8>,
    pub blobs: Vec<(String, Vec<u8>)>,
}

pub fn push_image(server: &Server, repo: &str, tag: &str, blobs: Vec<Vec<u8>>) -> Image {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []}, "author": tag,
    }))
    .unwrap();
    push_blob(server, repo, &config);
    let mut all = vec![(sha256(&config), config.clone())];
    for b in &blobs {
        all.push((push_blob(server, repo, b), b.clone()));
    }
    let manifest = image_manifest(
        descriptor(OCI_CONFIG, &config),
        blobs.iter().map(|b| descriptor(OCI_LAYER, b)).collect(),
        None,
    );
    put_manifest(server, repo, tag, OCI_MANIFEST, &manifest).expect_status(201);
    Image {
        tag: tag.to_string(),
        manifest,
        blobs: all,
    }
}

/// Pull an image through `server` the way a client does; `false` if any
/// part of it could not be had.
pub fn pull_whole(server: &Server, repo: &str, image: &Image) -> bool {
    let m = curl(
        "GET",
        &format!("{}/v2/{repo}/manifests/{}", server.url(), image.tag),
    )
    .header("Accept", OCI_MANIFEST)
    .send();
    if m.status != 200 || m.body != image.manifest {
        return false;
    }
    image.blobs.iter().all(|(d, bytes)| {
        let b = curl("GET", &format!("{}/v2/{repo}/blobs/{d}", server.url())).send();
        b.status == 200 && &b.body == bytes
    })
}

/// The digest `reference` names in `repo`, or `None` when it is not served.
pub fn manifest_digest(server_url: &str, repo: &str, reference: &str) -> Option<String> {
    let r = curl(
        "GET",
        &format!("{server_url}/v2/{repo}/manifests/{reference}"),
    )
    .header("Accept", OCI_MANIFEST)
    .send();
    (r.status == 200).then(|| {
        r.header("docker-content-digest")
            .unwrap_or_default()
            .to_string()
    })
}

/// `count` images tagged `v0`, `v1`, ... in `repo` on `server`, each of
/// `image_size` bytes: `shared` (a layer every image has) and a layer of
/// its own (seeded from `seed`).
pub fn push_images_sharing_a_layer(
    server: &Server,
    repo: &str,
    count: u64,
    image_size: u64,
    shared: &[u8],
    seed: u64,
) -> Vec<Image> {
    (0..count)
        .map(|i| {
            let own = pseudo_random(image_size as usize - shared.len(), seed + i);
            push_image(server, repo, &format!("v{i}"), vec![shared.to_vec(), own])
        })
        .collect()
}

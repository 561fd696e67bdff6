//! Image update checks for `follow` and `notify` services: does the tag now point to another
//! digest than the one that runs?

use std::path::Path;

use crate::config::AgentConfig;
use crate::image::manifest::media_types;
use crate::image::registry::{ClientOptions, RegistryClient};
use crate::image::{ImageStore, Reference};

/// The digest `reference` (a tag) resolves to at its registry when it differs from what the
/// running image (`manifest_digest`, as recorded in the generation) was pulled as; `None`
/// when unchanged.
pub fn newer_digest(
    root: &Path,
    config: &AgentConfig,
    reference: &str,
    manifest_digest: &str,
) -> Result<Option<String>, String> {
    let r = Reference::parse_pullable(reference).map_err(|e| e.to_string())?;
    if r.digest().is_some() {
        // Pinned by digest in the manifest: it cannot move.
        return Ok(None);
    }
    let store = ImageStore::open(root).map_err(|e| e.to_string())?;
    // What the tag resolved to when pulled (an index for multi-platform images), found
    // through the pinned alias of the running manifest.
    let pinned = format!("{}@{manifest_digest}", r.name());
    let local = store
        .find(&pinned)
        .map(|rec| rec.repo_digest.to_string())
        .unwrap_or_else(|_| manifest_digest.to_string());
    let client = RegistryClient::new(ClientOptions::from_config(&config.registries))
        .map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start the async runtime: {e}"))?;
    // A HEAD request first (no body); a registry that sends no digest header gets a GET.
    let remote = rt.block_on(async {
        match client.head_manifest_digest(&r, media_types::ACCEPT).await {
            Ok(Some(d)) => Ok(d.to_string()),
            Ok(None) => client
                .fetch_manifest(&r, media_types::ACCEPT)
                .await
                .map(|m| m.digest.to_string()),
            Err(e) => Err(e),
        }
    });
    let remote = remote.map_err(|e| e.to_string())?;
    Ok((remote != local && remote != manifest_digest).then_some(remote))
}

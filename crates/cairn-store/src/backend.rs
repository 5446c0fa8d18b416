//! Where objects live: a local directory (our own atomic writes), or any
//! `object_store` (S3-compatible, or in memory for tests).

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::TryStreamExt;
#[cfg(feature = "s3")]
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};
use crate::local::LocalDir;

/// How much of a write is durable when it returns. Object stores make every
/// write durable whole; only the local backend tells the two apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durable {
    /// The object, bytes and name: it survives a crash once the write returns.
    Object,
    /// Its bytes, but its name only once the next [`Durable::Object`] write
    /// into the same folder, or [`Backend::sync_folder`] on it, returns. For
    /// objects that are worth nothing until such a write names them: a
    /// snapshot's parts (its manifest, written beside them after them, commits
    /// it) and a part's chunks (their folder is synced before the part).
    Bytes,
}

/// A backend, chosen by URL.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Local(LocalDir),
    Objects {
        store: Arc<dyn ObjectStore>,
        prefix: String,
    },
}

impl Backend {
    /// `memory://` (private to this opening), `memory://NAME` (one per
    /// process and name), `s3://bucket[/prefix]`, `file:///path` or a plain path.
    ///
    /// For S3 the endpoint comes from `CAIRN_S3_ENDPOINT` or `AWS_ENDPOINT_URL`
    /// (for S3-compatible servers), credentials and region from the usual
    /// `AWS_*` variables. Manifests are written with `If-None-Match: *`.
    pub fn open(url: &str) -> Result<Self> {
        let bad = |problem: String| Error::BadUrl {
            url: url.to_string(),
            problem,
        };
        if url == "memory://" || url == "memory" {
            return Ok(Backend::Objects {
                store: Arc::new(InMemory::new()),
                prefix: String::new(),
            });
        }
        if let Some(name) = url.strip_prefix("memory://") {
            // A named store in memory is one per process, whoever opens it:
            // the shared durable store of a simulated cluster.
            static NAMED: std::sync::Mutex<Vec<(String, Arc<InMemory>)>> =
                std::sync::Mutex::new(Vec::new());
            let mut named = NAMED.lock().unwrap_or_else(|p| p.into_inner());
            let store = match named.iter().find(|(n, _)| n == name) {
                Some((_, s)) => s.clone(),
                None => {
                    let s = Arc::new(InMemory::new());
                    named.push((name.to_string(), s.clone()));
                    s
                }
            };
            return Ok(Backend::Objects {
                store,
                prefix: String::new(),
            });
        }
        #[cfg(not(feature = "s3"))]
        if url.starts_with("s3://") {
            return Err(bad(
                "this build has no S3 support: build cairn-store (or cairn-runtime) with the `s3` feature, as the cairn CLI is"
                    .into(),
            ));
        }
        #[cfg(feature = "s3")]
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("name a bucket: s3://bucket/prefix".into()));
            }
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_conditional_put(S3ConditionalPut::ETagMatch);
            let endpoint =
                std::env::var("CAIRN_S3_ENDPOINT").or_else(|_| std::env::var("AWS_ENDPOINT_URL"));
            if let Ok(endpoint) = endpoint {
                b = b
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false);
            }
            if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err()
            {
                b = b.with_region("us-east-1");
            }
            let store = b.build().map_err(|e| bad(e.to_string()))?;
            return Ok(Backend::Objects {
                store: Arc::new(store),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if let Some(scheme) = url
            .split_once("://")
            .map(|(s, _)| s)
            .filter(|s| *s != "file")
        {
            return Err(bad(format!(
                "unknown scheme {scheme:?}: use a path, file://, s3:// or memory://"
            )));
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.is_empty() {
            return Err(bad("empty path".into()));
        }
        Ok(Backend::Local(LocalDir::new(path)))
    }

    fn obj_path(prefix: &str, key: &str) -> ObjPath {
        if prefix.is_empty() {
            ObjPath::from(key)
        } else {
            ObjPath::from(format!("{prefix}/{key}"))
        }
    }

    pub async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        create_only: bool,
        durable: Durable,
    ) -> Result<()> {
        match self {
            Backend::Local(d) => d.put(key, bytes, create_only, durable).await,
            Backend::Objects { store, prefix } => {
                let mode = if create_only {
                    PutMode::Create
                } else {
                    PutMode::Overwrite
                };
                let opts = PutOptions {
                    mode,
                    ..PutOptions::default()
                };
                store
                    .put_opts(&Self::obj_path(prefix, key), PutPayload::from(bytes), opts)
                    .await
                    .map(|_| ())
                    .map_err(|e| map(key, e))
            }
        }
    }

    /// Makes the names of the objects written into `folder` durable (see
    /// [`Durable::Bytes`]); nothing to do for an object store.
    pub async fn sync_folder(&self, folder: &str) -> Result<()> {
        match self {
            Backend::Local(d) => d.sync_folder(folder).await,
            Backend::Objects { .. } => Ok(()),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Bytes> {
        match self {
            Backend::Local(d) => d.get(key).await,
            Backend::Objects { store, prefix } => {
                let got = store
                    .get(&Self::obj_path(prefix, key))
                    .await
                    .map_err(|e| map(key, e))?;
                got.bytes().await.map_err(|e| map(key, e))
            }
        }
    }

    /// Keys under the folder `prefix`, relative to the store's root.
    pub async fn list(&self, folder: &str) -> Result<Vec<String>> {
        Ok(self
            .list_meta(folder)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Keys under the folder `prefix` with when each was last written.
    pub async fn list_meta(&self, folder: &str) -> Result<Vec<(String, SystemTime)>> {
        match self {
            Backend::Local(d) => d.list_meta(folder).await,
            Backend::Objects { store, prefix } => {
                let p = Self::obj_path(prefix, folder);
                let metas: Vec<_> = store
                    .list(Some(&p))
                    .try_collect()
                    .await
                    .map_err(|e| map(folder, e))?;
                let strip = if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                };
                let mut keys: Vec<(String, SystemTime)> = metas
                    .into_iter()
                    .map(|m| {
                        let k = m.location.to_string();
                        let k = k.strip_prefix(&strip).map(str::to_string).unwrap_or(k);
                        (k, SystemTime::from(m.last_modified))
                    })
                    .collect();
                keys.sort();
                Ok(keys)
            }
        }
    }

    /// Deletes `keys` in order; missing ones count as deleted.
    pub async fn delete_all(&self, keys: Vec<String>) -> Result<()> {
        match self {
            Backend::Local(d) => d.delete_all(keys).await,
            Backend::Objects { .. } => {
                for k in &keys {
                    self.delete(k).await?;
                }
                Ok(())
            }
        }
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        match self {
            Backend::Local(d) => d.delete(key).await,
            Backend::Objects { store, prefix } => {
                match store.delete(&Self::obj_path(prefix, key)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(map(key, e)),
                }
            }
        }
    }
}

fn map(key: &str, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::NotFound {
            key: key.to_string(),
        },
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            Error::AlreadyExists {
                key: key.to_string(),
            }
        }
        other => Error::Backend {
            key: key.to_string(),
            problem: other.to_string(),
        },
    }
}

//! A cluster configuration: the file's text, and the environment's overrides.
#![no_main]

use std::path::Path;

use cairn_runtime::ClusterConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The last line, if it looks like NAME=VALUE, is an environment variable.
    let (body, env) = match text.rsplit_once('\n') {
        Some((b, last)) if last.starts_with("CAIRN_") && last.contains('=') => (b, Some(last)),
        _ => (text, None),
    };
    let lookup = |k: &str| {
        env.and_then(|l| l.split_once('='))
            .filter(|(name, _)| *name == k)
            .map(|(_, v)| v.to_string())
    };
    let _ = ClusterConfig::parse(Path::new("fuzz.toml"), body, lookup);
});

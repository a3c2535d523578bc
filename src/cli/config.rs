//! Named profiles (a URL and a key each) in `hookline/config.toml` under the user's config
//! directory, written by `hookline login` with mode 0600, and the choice of target from
//! flags, environment and profile.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};

use super::api::Api;
use super::{output, usage, Global};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct File {
    /// The profile used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub url: String,
    pub key: String,
}

const DEFAULT: &str = "default";

pub fn path() -> anyhow::Result<PathBuf> {
    let dir = dirs::config_dir().context("no config directory (set HOME or XDG_CONFIG_HOME)")?;
    Ok(dir.join("hookline").join("config.toml"))
}

pub fn read() -> anyhow::Result<File> {
    let path = path()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the file through a temporary one created 0600, so the key is never readable by
/// others, not even for a moment, and a crash leaves the old file whole.
fn write(file: &File) -> anyhow::Result<PathBuf> {
    let path = path()?;
    let dir = path.parent().expect("the path has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = toml::to_string_pretty(file)?;
    let tmp = dir.join(".config.toml.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        // A leftover from an interrupted write may have other bits: reset them first.
        if tmp.exists() {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    {
        use std::io::Write;
        let mut f = options
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The API to talk to: `--url`/`--key` (or `HOOKLINE_URL`/`HOOKLINE_KEY`) over the
/// profile's, each on its own.
pub fn target(global: &Global) -> anyhow::Result<Api> {
    let file = read()?;
    let named = global.profile.clone();
    let name = named
        .clone()
        .or_else(|| file.default_profile.clone())
        .unwrap_or_else(|| DEFAULT.to_string());
    let profile = file.profiles.get(&name);
    if named.is_some() && profile.is_none() {
        return Err(usage(format!(
            "no profile `{name}` in {}; create it with `hookline login --profile {name}`",
            path()?.display()
        )));
    }
    let url = global
        .url
        .clone()
        .or_else(|| profile.map(|p| p.url.clone()))
        .ok_or_else(|| {
            usage("no Hookline to talk to: give --url (or HOOKLINE_URL), or run `hookline login`")
        })?;
    let key = global
        .key
        .clone()
        .or_else(|| profile.map(|p| p.key.clone()));
    Api::new(&url, key)
}

#[derive(Debug, Args)]
pub struct Login {
    /// Save as this profile (default: `default`); it becomes the default profile.
    #[arg(long = "as", value_name = "PROFILE")]
    pub name: Option<String>,
    /// Save without checking the key against the API.
    #[arg(long)]
    pub no_check: bool,
}

pub async fn login(login: Login, global: &Global) -> anyhow::Result<()> {
    let name = login
        .name
        .or_else(|| global.profile.clone())
        .unwrap_or_else(|| DEFAULT.to_string());
    let url = global
        .url
        .clone()
        .ok_or_else(|| usage("login needs --url (or HOOKLINE_URL)"))?;
    let key = match &global.key {
        Some(key) => key.clone(),
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                output::note("API key: ");
            }
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim().to_string()
        }
    };
    if key.is_empty() {
        return Err(usage("login needs a key (--key, HOOKLINE_KEY or on stdin)"));
    }
    let api = Api::new(&url, Some(key.clone()))?;
    if !login.no_check {
        // Any key, tenant's or operator's, may read the catalog: a refusal means the key
        // (or the URL) is wrong.
        api.get("/v1/event-types?limit=1").await?;
    }
    let mut file = read()?;
    file.profiles.insert(name.clone(), Profile { url, key });
    file.default_profile = Some(name.clone());
    let path = write(&file)?;
    output::success(&format!(
        "Saved profile `{name}` in {} (the default now)",
        path.display()
    ));
    Ok(())
}

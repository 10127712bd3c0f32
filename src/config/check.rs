//! `Check`: collects every error of one file, each naming its key, and reads each key's value
//! against its default and range; the URL and password-file readers it uses.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::Given;
use super::{ConfigError, Environment, Secret};

/// Collects `validate`'s errors. Each getter takes a key's `Given` value and its default, reports
/// a wrong type or range naming the key, and returns the default in its place.
pub(super) struct Check<'e> {
    pub(super) errors: Vec<ConfigError>,
    pub(super) env: &'e dyn Environment,
}

impl Check<'_> {
    pub(super) fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }

    pub(super) fn opt_string(&mut self, key: &str, given: Given<String>) -> Option<String> {
        match given {
            Given::Absent => None,
            Given::Value(s) => Some(s),
            Given::Wrong(found) => {
                self.err(key, format!("must be a string, found {found}"));
                None
            }
        }
    }

    pub(super) fn string(&mut self, key: &str, given: Given<String>, default: &str) -> String {
        self.opt_string(key, given)
            .unwrap_or_else(|| default.to_string())
    }

    pub(super) fn integer(
        &mut self,
        key: &str,
        given: Given<i64>,
        default: i64,
        min: i64,
        max: i64,
    ) -> i64 {
        match given {
            Given::Absent => default,
            Given::Value(n) if (min..=max).contains(&n) => n,
            Given::Value(n) => {
                self.err(key, format!("{n} is out of range {min}..={max}"));
                default
            }
            Given::Wrong(found) => {
                self.err(key, format!("must be an integer, found {found}"));
                default
            }
        }
    }

    pub(super) fn millis(
        &mut self,
        key: &str,
        given: Given<i64>,
        default: i64,
        min: i64,
        max: i64,
    ) -> Duration {
        Duration::from_millis(self.integer(key, given, default, min, max) as u64)
    }

    pub(super) fn seconds(
        &mut self,
        key: &str,
        given: Given<i64>,
        default: i64,
        min: i64,
        max: i64,
    ) -> Duration {
        Duration::from_secs(self.integer(key, given, default, min, max) as u64)
    }

    pub(super) fn ip(&mut self, key: &str, given: Given<String>, default: &str) -> Option<IpAddr> {
        let text = self.string(key, given, default);
        let ip = text.parse().ok();
        if ip.is_none() {
            self.err(key, format!("{text:?} is not an IP address"));
        }
        ip
    }

    /// One of the words in `choices`, spelt exactly.
    pub(super) fn choice<T: Copy>(
        &mut self,
        key: &str,
        given: Given<String>,
        default: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let text = self.string(key, given, default);
        self.one_of(key, &text, &text, choices)
    }

    /// The value `choices` gives `word`; if none, an error quoting `text` (what the file says).
    pub(super) fn one_of<T: Copy>(
        &mut self,
        key: &str,
        text: &str,
        word: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let found = choices
            .iter()
            .find(|(name, _)| *name == word)
            .map(|(_, v)| *v);
        if found.is_none() {
            let names = choices
                .iter()
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(", ");
            self.err(key, format!("{text:?} is not one of {names}"));
        }
        found
    }

    /// The password from, in order of preference, `password_file`, `password_env`, `password`.
    pub(super) fn password(
        &mut self,
        file: Given<String>,
        env_name: Given<String>,
        inline: Given<String>,
    ) -> Option<Secret> {
        let file = self
            .opt_string("ari.password_file", file)
            .map(PathBuf::from);
        let env_name = self.opt_string("ari.password_env", env_name);
        let inline = self.opt_string("ari.password", inline);
        let (key, found) = match (file, env_name, inline) {
            (Some(path), _, _) => ("ari.password_file", read_secret_file(&path)),
            (None, Some(name), _) => {
                let value = self.env.var(&name).filter(|p| !p.is_empty());
                (
                    "ari.password_env",
                    value.ok_or(format!("environment variable {name} is not set or empty")),
                )
            }
            (None, None, Some(p)) if !p.is_empty() => ("ari.password", Ok(p)),
            (None, None, Some(_)) => ("ari.password", Err("is empty".to_string())),
            (None, None, None) => (
                "ari.password",
                Err("missing: set one of password, password_env, password_file".to_string()),
            ),
        };
        found.map(Secret::new).map_err(|m| self.err(key, m)).ok()
    }
}

impl Check<'_> {
    /// A TOML table, or `None` (absent, or reported when of another type).
    pub(super) fn table(&mut self, key: &str, given: Given<toml::Table>) -> Option<toml::Table> {
        match given {
            Given::Absent => None,
            Given::Value(t) => Some(t),
            Given::Wrong(found) => {
                self.err(key, format!("must be a table, found {found}"));
                None
            }
        }
    }

    /// A bot's optional bearer token: `Some(None)` when it has none, `None` when the one named
    /// cannot be read (reported).
    pub(super) fn token(
        &mut self,
        bot: &str,
        file: Given<String>,
        env_name: Given<String>,
    ) -> Option<Option<Secret>> {
        let (file_key, env_key) = (
            format!("bots.{bot}.token_file"),
            format!("bots.{bot}.token_env"),
        );
        let file = self.opt_string(&file_key, file).map(PathBuf::from);
        let env_name = self.opt_string(&env_key, env_name);
        let (key, found) = match (file, env_name) {
            (Some(path), _) => (file_key, read_secret_file(&path)),
            (None, Some(name)) => {
                let value = self.env.var(&name).filter(|t| !t.is_empty());
                (
                    env_key,
                    value.ok_or(format!("environment variable {name} is not set or empty")),
                )
            }
            (None, None) => return Some(None),
        };
        match found {
            // A header carries it: no control characters.
            Ok(t) if t.chars().any(|ch| ch.is_control()) => {
                self.err(key, "the token holds control characters");
                None
            }
            Ok(t) => Some(Some(Secret::new(t))),
            Err(m) => {
                self.err(key, m);
                None
            }
        }
    }
}

pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Turns the configured URL into the REST and WebSocket bases, both ending in `/ari`.
/// Accepts `http(s)://host[:port][/prefix][/ari]`; refuses credentials in the URL (they would end
/// up in logs) and anything that is not http or https.
pub fn parse_ari_url(url: &str) -> Result<(String, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not a URL (expected http://host:port)"))?;
    let ws_scheme = match scheme {
        "http" => "ws",
        "https" => "wss",
        _ => return Err(format!("{url:?}: scheme must be http or https")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if authority.contains('@') {
        return Err(
            "must not contain credentials: use username and password_env/password_file".to_string(),
        );
    }
    if path.contains(['?', '#', ' ']) {
        return Err(format!(
            "{url:?} must not contain a query, fragment or space"
        ));
    }
    if let Some((host, port)) = authority.rsplit_once(':') {
        if !host.ends_with(']') && host.contains(':') {
            return Err(format!("{url:?}: IPv6 hosts must be in brackets"));
        }
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!(
                "{url:?}: port {port:?} is not a number in 1..=65535"
            ));
        }
    }
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix("/ari").unwrap_or(path);
    Ok((
        format!("{scheme}://{authority}{path}/ari"),
        format!("{ws_scheme}://{authority}{path}/ari"),
    ))
}

/// Reads a password file, refusing one that others may read.
fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by group or others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret)
}

//! The manager's side of the pre-shared key store
//! ([`crate::config::secrets`]): the `psk_*` requests, keys of
//! `SecretsManager` connections moved out of a change into the store, keys
//! generated for references the store does not hold yet, and the lookup
//! that gives IKE its keys.
//!
//! Rotation takes effect at once: the tunnels that reference a rotated
//! secret are reconciled, their spec (which holds the key) differs, and
//! IKE replaces them, i.e. a new IKE SA authenticated with the new key.
//! Waiting for "the next IKE SA" would not do: an IKEv2 IKE SA rekey
//! (RFC 7296 § 2.18) does not authenticate again, so the old key would
//! stay in force for as long as the peer keeps the tunnel up. Spec § 19.1
//! likewise says a PSK change interrupts the tunnel.

use super::{Dataplane, Manager, not_found};
use crate::api::{ApiError, ErrorCode, Response};
use crate::config::secrets::{SecretInfo, valid_secret_name};
use crate::config::{
    ApplianceConfig, ConfigError, PreSharedKey, PreSharedKeyStorage, VpnConnection,
};
use crate::ike::tunnels::TunnelSpec;

/// Keys taken out of a change, to be stored once it validated.
pub(super) type Pending = Vec<(String, PreSharedKey)>;

/// For a `SecretsManager` connection: every inline key moves to the
/// store (the configuration keeps its name, `<connection>/<tunnel>` when
/// none is given). This is how a configuration with inline keys migrates
/// (`config_import` after switching `pre_shared_key_storage`), and how
/// `modify_tunnel_options --set pre_shared_key=…` still works.
pub(super) fn take_inline_keys(conn: &mut VpnConnection, pending: &mut Pending) {
    if conn.pre_shared_key_storage != PreSharedKeyStorage::SecretsManager {
        return;
    }
    for (i, t) in conn.tunnels.iter_mut().enumerate() {
        let name = t
            .pre_shared_key_ref
            .get_or_insert_with(|| format!("{}/{i}", conn.id))
            .clone();
        if let Some(k) = t.pre_shared_key.take() {
            pending.push((name, k));
        }
    }
}

fn users(config: &ApplianceConfig, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for c in &config.connections {
        for (i, t) in c.tunnels.iter().enumerate() {
            if t.pre_shared_key_ref.as_deref() == Some(name) {
                out.push(format!("{}/{i}", c.id));
            }
        }
    }
    out
}

fn store_error(e: &crate::config::secrets::SecretStoreError) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!("pre-shared key store: {e}; the key was not changed"),
    )
}

impl<D: Dataplane> Manager<D> {
    /// Check the keys of `pending`, then store them and generate a key for
    /// every reference of `config` the store does not hold.
    pub(super) fn store_keys(
        &mut self,
        pending: Pending,
        config_refs: &[String],
    ) -> Result<(), ApiError> {
        for (name, key) in &pending {
            if let Err(e) = key.check() {
                return Err(ApiError::validation(&[ConfigError::Invalid {
                    field: format!("pre_shared_key ({name})"),
                    value: "<redacted>".to_owned(),
                    allowed: e.to_string(),
                }]));
            }
        }
        for (name, key) in pending {
            self.secrets
                .put(&name, key, self.clock_ms, &mut *self.fill)
                .map_err(|e| store_error(&e))?;
        }
        for name in config_refs {
            if !self.secrets.contains(name) {
                let key = PreSharedKey::generate(&mut *self.fill);
                self.secrets
                    .put(name, key, self.clock_ms, &mut *self.fill)
                    .map_err(|e| store_error(&e))?;
            }
        }
        Ok(())
    }

    /// `psk_set` / `psk_rotate` (`must_exist`).
    pub(super) fn psk_put(
        &mut self,
        name: &str,
        key: Option<PreSharedKey>,
        must_exist: bool,
    ) -> Result<Response, ApiError> {
        if !valid_secret_name(name) {
            return Err(ApiError::validation(&[ConfigError::Invalid {
                field: "name".to_owned(),
                value: name.to_owned(),
                allowed: "1..=128 characters from [A-Za-z0-9._/-]".to_owned(),
            }]));
        }
        if must_exist && !self.secrets.contains(name) {
            return Err(not_found("pre-shared key", name));
        }
        let key = key.unwrap_or_else(|| PreSharedKey::generate(&mut *self.fill));
        self.store_keys(vec![(name.to_owned(), key)], &[])?;
        Ok(Response::Psk {
            secret: self.secret_info(name),
        })
    }

    /// `psk_delete`: refused while a tunnel references the secret.
    pub(super) fn psk_delete(&mut self, name: &str) -> Result<Response, ApiError> {
        let used = users(&self.config, name);
        if !used.is_empty() {
            return Err(ApiError::validation(&[ConfigError::Invalid {
                field: "name".to_owned(),
                value: name.to_owned(),
                allowed: format!("a secret no tunnel uses; used by {}", used.join(", ")),
            }]));
        }
        match self.secrets.remove(name, &mut *self.fill) {
            Ok(true) => Ok(Response::Ok),
            Ok(false) => Err(not_found("pre-shared key", name)),
            Err(e) => Err(store_error(&e)),
        }
    }

    /// `psk_list`.
    pub(super) fn psk_list(&self) -> Response {
        let mut secrets = self.secrets.list();
        for s in &mut secrets {
            s.used_by = users(&self.config, &s.name);
        }
        Response::Psks { secrets }
    }

    fn secret_info(&self, name: &str) -> SecretInfo {
        let mut info = self
            .secrets
            .list()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or(SecretInfo {
                name: name.to_owned(),
                version: 0,
                updated_ms: 0,
                used_by: Vec::new(),
            });
        info.used_by = users(&self.config, name);
        info
    }

    /// The connections whose tunnels reference secret `name`.
    #[must_use]
    pub fn connections_using_secret(&self, name: &str) -> Vec<String> {
        let mut ids: Vec<String> = users(&self.config, name)
            .into_iter()
            .filter_map(|t| t.rsplit_once('/').map(|(c, _)| c.to_owned()))
            .collect();
        ids.dedup();
        ids
    }

    /// Give every spec that references the key store its key; a spec
    /// whose secret is missing is not run (and named in `skipped`).
    pub fn resolve_keys(&self, specs: &mut Vec<TunnelSpec>, skipped: &mut Vec<String>) {
        specs.retain_mut(|s| {
            let Some(name) = s.pre_shared_key_ref().map(str::to_owned) else {
                return true;
            };
            match self.secrets.get(&name) {
                Some(k) => {
                    s.set_pre_shared_key(k.clone());
                    true
                }
                None => {
                    skipped.push(format!(
                        "{}/{}: pre-shared key {name:?} is not in the key store",
                        s.key.connection_id, s.key.tunnel
                    ));
                    false
                }
            }
        });
    }

    /// A copy of `conn` with its store keys inline, for the device
    /// configuration download (which must carry them).
    pub(super) fn with_keys_inline(&self, conn: &VpnConnection) -> VpnConnection {
        let mut c = conn.clone();
        for t in &mut c.tunnels {
            if t.pre_shared_key.is_none()
                && let Some(k) = t
                    .pre_shared_key_ref
                    .as_deref()
                    .and_then(|n| self.secrets.get(n))
            {
                t.pre_shared_key = Some(k.clone());
            }
        }
        c
    }
}

/// Every store reference of `conn`.
pub(super) fn refs_of(conn: &VpnConnection) -> Vec<String> {
    if conn.pre_shared_key_storage != PreSharedKeyStorage::SecretsManager {
        return Vec::new();
    }
    conn.tunnels
        .iter()
        .filter_map(|t| t.pre_shared_key_ref.clone())
        .collect()
}

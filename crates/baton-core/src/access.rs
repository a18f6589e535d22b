//! Who may do what (DESIGN §8): API keys, their roles, and the permission each role grants.
//! The HTTP layer authenticates; the rule of which role may call which route lives here.

use crate::api::Actor;
use crate::error::{Code, Error, Result};
use crate::id::{new_id, new_secret, sha256_hex};
use crate::model::{ApiKey, ROLES};
use crate::ops::Ctx;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read tasks, briefs, events.
    Read,
    /// Create and shape tasks, plans and dependencies.
    Plan,
    /// Claim and work under leases.
    Work,
    /// Approve and reject.
    Review,
    /// Manage workspaces and keys.
    Admin,
}

/// Whether `role` grants `permission`. Admin may do everything; everyone may read.
pub fn role_allows(role: &str, permission: Permission) -> bool {
    use Permission::*;
    match (role, permission) {
        ("admin", _) => true,
        (_, Read) => ROLES.contains(&role),
        ("planner", Plan) => true,
        ("worker", Work) => true,
        ("reviewer", Review) => true,
        _ => false,
    }
}

/// A key as its creator sees it, once: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyGrant {
    /// `key_…`
    pub id: String,
    /// The secret to send as `Authorization: Bearer …`.
    pub token: String,
    /// Its role.
    pub role: String,
    /// The agent it acts as, if bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The workspace it acts in.
    pub workspace_id: String,
}

/// Output of key creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyOut {
    /// The new key.
    pub key: KeyGrant,
}

/// Creates a key in the context's workspace.
pub fn create_key(ctx: &mut Ctx<'_>, role: &str, agent: Option<String>) -> Result<KeyOut> {
    if !ROLES.contains(&role) {
        return Err(Error::invalid(
            format!("unknown role '{role}'"),
            format!("use one of: {}", ROLES.join(", ")),
        ));
    }
    if let Some(a) = &agent {
        crate::ops::check_new_name("agent", a, 200)?;
    }
    let token = new_secret("btn");
    let key = ApiKey {
        id: new_id("key"),
        workspace_id: ctx.ws.to_string(),
        role: role.to_string(),
        agent,
        token_sha256: sha256_hex(&token),
        created_at: ctx.now,
    };
    ctx.tx.put_key(&key)?;
    ctx.emit("key.created", None, json!({ "key": key }))?;
    Ok(KeyOut {
        key: KeyGrant {
            id: key.id,
            token,
            role: key.role,
            agent: key.agent,
            workspace_id: key.workspace_id,
        },
    })
}

/// An authenticated caller: the actor its calls run as, and its key.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The workspace and name calls run as.
    pub actor: Actor,
    /// The key presented.
    pub key: ApiKey,
}

impl Principal {
    /// Refuses with `FORBIDDEN` unless the key's role grants `permission`.
    pub fn require(&self, permission: Permission) -> Result<&Actor> {
        self.require_any(&[permission])
    }

    /// Refuses with `FORBIDDEN` unless the key's role grants one of `permissions`; the
    /// refusal names the roles that would do.
    pub fn require_any(&self, permissions: &[Permission]) -> Result<&Actor> {
        if permissions.iter().any(|p| role_allows(&self.key.role, *p)) {
            return Ok(&self.actor);
        }
        let roles: Vec<&str> = ROLES
            .iter()
            .copied()
            .filter(|r| permissions.iter().any(|p| role_allows(r, *p)))
            .collect();
        let needs = permissions.first().copied().unwrap_or(Permission::Admin);
        Err(Error::new(
            Code::Forbidden,
            format!("a {} key may not do this", self.key.role),
            format!("use a key whose role allows it: {}", roles.join(" or ")),
        )
        .with_details(json!({
            "role": self.key.role,
            "needs": format!("{needs:?}").to_lowercase(),
            "roles": roles,
        })))
    }
}

/// The principal a bearer token stands for, or `UNAUTHORIZED`.
pub fn authenticate(ctx: &mut Ctx<'_>, token: &str) -> Result<Principal> {
    let unauthorized = || {
        Error::new(
            Code::Unauthorized,
            "unknown or revoked API key",
            "send a valid key as Authorization: Bearer …",
        )
    };
    let key = ctx
        .tx
        .key_by_hash(&sha256_hex(token))?
        .ok_or_else(unauthorized)?;
    let name = key.agent.clone().unwrap_or_else(|| key.id.clone());
    Ok(Principal {
        actor: Actor {
            workspace_id: key.workspace_id.clone(),
            name,
            agent: key.agent.clone(),
            request_id: None,
        },
        key,
    })
}

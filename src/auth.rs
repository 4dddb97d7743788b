//! Caller authentication: a bearer token per calling service, stored only as its SHA-256, with a scope.

use std::path::Path;

use sha2::{Digest, Sha256};

/// What a token may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Systems of record and the flow builder: directory sync, auto-assignment, and everything else.
    System,
    /// Acts for the user named in `x-actor-id`; cannot call system RPCs.
    User,
}

#[derive(Debug, Clone)]
pub struct Token {
    /// Who holds the token, for logs (never the secret).
    pub name: String,
    pub scope: Scope,
    sha256: [u8; 32],
}

/// The configured tokens. Empty means authentication is off.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<Token>,
}

/// The hex SHA-256 of a token, as the tokens file stores it.
pub fn hash_token(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Tokens {
    /// Parses a tokens file: one `name scope sha256-hex` per line (`scope` is `system` or `user`);
    /// blank lines and `#` comments are ignored.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, scope, hash] = fields[..] else {
                return Err(format!(
                    "line {}: expected `name scope sha256-hex`, found {} fields",
                    number + 1,
                    fields.len()
                ));
            };
            let scope = match scope {
                "system" => Scope::System,
                "user" => Scope::User,
                other => {
                    return Err(format!(
                        "line {}: scope {other:?} is not `system` or `user`",
                        number + 1
                    ));
                }
            };
            let sha256 = parse_hex(hash.trim_start_matches("sha256:")).ok_or_else(|| {
                format!(
                    "line {}: the hash must be 64 hex digits (sha256)",
                    number + 1
                )
            })?;
            if entries.iter().any(|t: &Token| t.name == name) {
                return Err(format!(
                    "line {}: token name {name:?} appears twice",
                    number + 1
                ));
            }
            entries.push(Token {
                name: name.to_owned(),
                scope,
                sha256,
            });
        }
        Ok(Self { entries })
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The token whose hash matches `secret`. Every entry is compared in full, so timing reveals nothing.
    pub fn authenticate(&self, secret: &str) -> Option<&Token> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found = None;
        for token in &self.entries {
            let difference = token
                .sha256
                .iter()
                .zip(&digest)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if difference == 0 {
                found = Some(token);
            }
        }
        found
    }
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// RPCs only `system` tokens may call: the systems of record's directory sync and the flow builder's
/// auto-assignment.
pub fn is_system_rpc(path: &str) -> bool {
    path.starts_with("/assignment.v1.DirectoryService/")
        || path == "/assignment.v1.AssignmentService/AutoAssignConversation"
}

/// Paths open to everyone: health probes and reflection.
pub fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// Whether the service may start with these tokens on this address: with neither tokens nor client
/// certificates (mutual TLS) it accepts anyone, which is only safe on loopback unless the operator says
/// otherwise. Returns a warning to log, or the refusal.
pub fn check_exposure(
    tokens: &Tokens,
    mutual_tls: bool,
    listen: std::net::SocketAddr,
    allow_unauthenticated: bool,
) -> Result<Option<String>, String> {
    if !tokens.is_empty() || mutual_tls {
        return Ok(None);
    }
    if listen.ip().is_loopback() {
        return Ok(Some(format!(
            "no tokens configured: accepting unauthenticated calls, on loopback ({listen}) only"
        )));
    }
    if allow_unauthenticated {
        return Ok(Some(format!(
            "no tokens configured and --allow-unauthenticated given: anyone who reaches {listen} can call"
        )));
    }
    Err(format!(
        "refusing to serve unauthenticated on non-loopback address {listen}: set TOKENS_FILE (see README), \
         listen on 127.0.0.1, or pass --allow-unauthenticated"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> String {
        format!(
            "# who scope hash\nflow-builder system {}\n\nmessaging user sha256:{}\n",
            hash_token("s3cret-system"),
            hash_token("s3cret-user")
        )
    }

    #[test]
    fn tokens_authenticate_by_hash_with_their_scope() {
        let tokens = Tokens::parse(&file()).unwrap();
        let system = tokens.authenticate("s3cret-system").unwrap();
        assert_eq!(
            (system.name.as_str(), system.scope),
            ("flow-builder", Scope::System)
        );
        assert_eq!(
            tokens.authenticate("s3cret-user").unwrap().scope,
            Scope::User
        );
        assert!(tokens.authenticate("wrong").is_none());
        assert!(tokens.authenticate("").is_none());
    }

    #[test]
    fn malformed_files_say_which_line() {
        assert!(Tokens::parse("a system").unwrap_err().contains("line 1"));
        assert!(Tokens::parse("a admin 00").unwrap_err().contains("scope"));
        assert!(Tokens::parse("a user abc").unwrap_err().contains("64 hex"));
        let twice = format!("a user {h}\na system {h}\n", h = hash_token("x"));
        assert!(Tokens::parse(&twice).unwrap_err().contains("twice"));
        assert!(Tokens::parse("\n# nothing\n").unwrap().is_empty());
    }

    #[test]
    fn system_rpcs_and_public_paths() {
        assert!(is_system_rpc("/assignment.v1.DirectoryService/UpsertUser"));
        assert!(is_system_rpc(
            "/assignment.v1.AssignmentService/AutoAssignConversation"
        ));
        assert!(!is_system_rpc(
            "/assignment.v1.AssignmentService/AssignConversation"
        ));
        assert!(is_public("/grpc.health.v1.Health/Check"));
        assert!(is_public(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_public("/assignment.v1.AccessGroupService/CheckAccess"));
    }

    #[test]
    fn unauthenticated_serving_is_for_loopback_unless_allowed() {
        let none = Tokens::default();
        let loopback = "127.0.0.1:50051".parse().unwrap();
        let public = "0.0.0.0:50051".parse().unwrap();
        assert!(
            check_exposure(&none, false, loopback, false)
                .unwrap()
                .is_some()
        );
        assert!(check_exposure(&none, false, public, false).is_err());
        assert!(
            check_exposure(&none, false, public, true)
                .unwrap()
                .is_some()
        );
        assert_eq!(check_exposure(&none, true, public, false).unwrap(), None);
        let some = Tokens::parse(&format!("svc system {}", hash_token("t"))).unwrap();
        assert_eq!(check_exposure(&some, false, public, false).unwrap(), None);
    }
}

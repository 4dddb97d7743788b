//! Authenticating calling services: each has a name, a scope, and a bearer token (stored only as its
//! SHA-256) and/or a client certificate (pinned by the SHA-256 of its DER encoding, for mutual TLS).

use std::path::Path;

use sha2::{Digest, Sha256};

/// What a calling service may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerScope {
    /// Systems of record and the flow builder: directory sync, auto-assignment, and everything else.
    System,
    /// Acts for the user named in `x-actor-id`; cannot call system RPCs.
    User,
}

/// How a caller proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    /// The SHA-256 of a bearer token.
    Token([u8; 32]),
    /// The SHA-256 of a client certificate's DER encoding.
    Certificate([u8; 32]),
}

impl Credential {
    fn kind(&self) -> &'static str {
        match self {
            Credential::Token(_) => "token",
            Credential::Certificate(_) => "certificate",
        }
    }

    fn digest(&self) -> &[u8; 32] {
        match self {
            Credential::Token(digest) | Credential::Certificate(digest) => digest,
        }
    }
}

/// A service allowed to call (a line of the tokens file); who acts for whom is `service::Caller`.
#[derive(Debug, Clone)]
pub struct CallingService {
    /// Who calls, for logs (never the secret).
    pub name: String,
    pub scope: CallerScope,
    credential: Credential,
}

/// The configured callers (the tokens file). Empty means authentication is off.
#[derive(Debug, Clone, Default)]
pub struct CallingServices {
    entries: Vec<CallingService>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex SHA-256 of a token, as the tokens file stores it.
pub fn hash_token(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// The hex SHA-256 of a DER certificate, as the tokens file pins it after `cert-sha256:`.
pub fn certificate_fingerprint(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

impl CallingServices {
    /// Parses a tokens file: one `name scope sha256-hex` (a token) or `name scope cert-sha256:hex` (a client
    /// certificate) per line; `scope` is `system` or `user`; blank lines and `#` comments are ignored. A name
    /// has at most one token and one certificate, with one scope; a secret or certificate belongs to one
    /// caller.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries: Vec<(usize, CallingService)> = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let number = number + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let caller = parse_line(line).map_err(|e| format!("line {number}: {e}"))?;
            for (first, other) in &entries {
                if other.credential == caller.credential {
                    return Err(format!(
                        "line {number}: the same {} as line {first} ({:?}); give each caller its own",
                        caller.credential.kind(),
                        other.name
                    ));
                }
                if other.name == caller.name && other.credential.kind() == caller.credential.kind()
                {
                    return Err(format!(
                        "line {number}: {:?} has a {} on line {first} already (its name appears twice)",
                        caller.name,
                        caller.credential.kind()
                    ));
                }
                if other.name == caller.name && other.scope != caller.scope {
                    return Err(format!(
                        "line {number}: {:?} has another scope on line {first}",
                        caller.name
                    ));
                }
            }
            entries.push((number, caller));
        }
        Ok(Self {
            entries: entries.into_iter().map(|(_, caller)| caller).collect(),
        })
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let callers = Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        // An empty file would silently turn authentication off.
        if callers.is_empty() {
            return Err(format!(
                "the tokens file {} names no caller: add a `name scope sha256-hex` line (or `name scope \
                 cert-sha256:hex`) for each calling service (see README), or unset TOKENS_FILE to serve \
                 without authentication",
                path.display()
            ));
        }
        Ok(callers)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether any caller is known by its client certificate.
    pub fn has_certificates(&self) -> bool {
        self.entries
            .iter()
            .any(|c| matches!(c.credential, Credential::Certificate(_)))
    }

    /// The caller whose token hash matches `secret`.
    pub fn by_token(&self, secret: &str) -> Option<&CallingService> {
        self.find(Credential::Token(Sha256::digest(secret.as_bytes()).into()))
    }

    /// The caller pinned to this DER certificate.
    pub fn by_certificate(&self, der: &[u8]) -> Option<&CallingService> {
        self.find(Credential::Certificate(Sha256::digest(der).into()))
    }

    /// Every entry is compared in full, so timing reveals nothing about a secret.
    fn find(&self, wanted: Credential) -> Option<&CallingService> {
        let mut found = None;
        for caller in &self.entries {
            let difference = caller
                .credential
                .digest()
                .iter()
                .zip(wanted.digest())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if difference == 0 && caller.credential.kind() == wanted.kind() {
                found = Some(caller);
            }
        }
        found
    }
}

fn parse_line(line: &str) -> Result<CallingService, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [name, scope, credential] = fields[..] else {
        return Err(format!(
            "expected `name scope sha256-hex` or `name scope cert-sha256:hex`, found {} fields",
            fields.len()
        ));
    };
    let scope = match scope {
        "system" => CallerScope::System,
        "user" => CallerScope::User,
        other => return Err(format!("scope {other:?} is not `system` or `user`")),
    };
    let credential = match credential.strip_prefix("cert-sha256:") {
        // `openssl x509 -fingerprint -sha256` prints upper-case hex pairs joined by colons.
        Some(fingerprint) => Credential::Certificate(
            parse_hex(&fingerprint.replace(':', "").to_ascii_lowercase()).ok_or(
                "the certificate fingerprint must be 64 hex digits (the SHA-256 of its DER encoding)",
            )?,
        ),
        None => Credential::Token(
            parse_hex(credential.trim_start_matches("sha256:"))
                .ok_or("the hash must be 64 hex digits (sha256)")?,
        ),
    };
    Ok(CallingService {
        name: name.to_owned(),
        scope,
        credential,
    })
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

/// Whether the service may start with these callers on this address. With neither tokens nor client
/// certificates it accepts anyone, which is only safe on loopback unless the operator says otherwise. Mutual
/// TLS proves a certificate was signed by the CA but says nothing of what its holder may call, so it needs
/// the callers file to give each certificate a name and scope; certificate lines without mutual TLS could
/// never match. Returns a warning to log, or the refusal.
pub fn check_exposure(
    callers: &CallingServices,
    mutual_tls: bool,
    listen: std::net::SocketAddr,
    allow_unauthenticated: bool,
) -> Result<Option<String>, String> {
    if mutual_tls && callers.is_empty() {
        return Err(
            "mutual TLS (TLS_CLIENT_CA) needs TOKENS_FILE to say which certificates may call and with \
             what scope: add `name scope cert-sha256:<hex>` lines (see README)"
                .into(),
        );
    }
    if callers.has_certificates() && !mutual_tls {
        return Err(
            "TOKENS_FILE pins client certificates (cert-sha256:) but mutual TLS is off: set \
             TLS_CLIENT_CA, or remove those lines"
                .into(),
        );
    }
    if !callers.is_empty() {
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
        let callers = CallingServices::parse(&file()).unwrap();
        let system = callers.by_token("s3cret-system").unwrap();
        assert_eq!(
            (system.name.as_str(), system.scope),
            ("flow-builder", CallerScope::System)
        );
        assert_eq!(
            callers.by_token("s3cret-user").unwrap().scope,
            CallerScope::User
        );
        assert!(callers.by_token("wrong").is_none());
        assert!(callers.by_token("").is_none());
        assert!(!callers.has_certificates());
    }

    #[test]
    fn certificates_are_pinned_by_fingerprint_and_never_match_a_token() {
        let der = b"not really DER, but any bytes have a fingerprint";
        let fingerprint = certificate_fingerprint(der);
        // openssl's style (upper case, colon-separated) reads the same.
        let openssl_style = fingerprint
            .to_ascii_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|pair| std::str::from_utf8(pair).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        let text = format!(
            "ingest system cert-sha256:{openssl_style}\nweb user cert-sha256:{}\n",
            certificate_fingerprint(b"other")
        );
        let callers = CallingServices::parse(&text).unwrap();
        assert!(callers.has_certificates());
        let caller = callers.by_certificate(der).unwrap();
        assert_eq!(
            (caller.name.as_str(), caller.scope),
            ("ingest", CallerScope::System)
        );
        assert_eq!(
            callers.by_certificate(b"other").unwrap().scope,
            CallerScope::User
        );
        assert!(callers.by_certificate(b"unknown").is_none());
        // A token line and a certificate line never stand in for each other.
        let token_line =
            CallingServices::parse(&format!("svc system {}", hash_token("abc"))).unwrap();
        assert!(token_line.by_certificate(b"abc").is_none());
    }

    #[test]
    fn malformed_files_say_which_line() {
        assert!(
            CallingServices::parse("a system")
                .unwrap_err()
                .contains("line 1")
        );
        assert!(
            CallingServices::parse("a admin 00")
                .unwrap_err()
                .contains("scope")
        );
        assert!(
            CallingServices::parse("a user abc")
                .unwrap_err()
                .contains("64 hex")
        );
        assert!(
            CallingServices::parse("a user cert-sha256:abc")
                .unwrap_err()
                .contains("64 hex")
        );
        let (x, y) = (hash_token("x"), hash_token("y"));
        let twice = format!("a user {x}\na user {y}\n");
        assert!(
            CallingServices::parse(&twice)
                .unwrap_err()
                .contains("twice")
        );
        assert!(CallingServices::parse("\n# nothing\n").unwrap().is_empty());
        // One name may have a token and a certificate, with one scope.
        let both = format!("a user {x}\na user cert-sha256:{y}\n");
        assert!(CallingServices::parse(&both).is_ok());
        let scopes = format!("a user {x}\na system cert-sha256:{y}\n");
        assert!(
            CallingServices::parse(&scopes)
                .unwrap_err()
                .contains("scope")
        );
    }

    #[test]
    fn the_example_files_parse() {
        assert!(
            !CallingServices::parse(include_str!("../deploy/tokens.example"))
                .unwrap()
                .is_empty()
        );
        let doc = include_str!("../docs/calling-services.md");
        let example = doc
            .split_once("# printf %s \"$TOKEN\" | sha256sum\n")
            .and_then(|(_, rest)| rest.split_once("```"))
            .expect("docs/calling-services.md has the tokens file example")
            .0;
        let callers = CallingServices::parse(example).unwrap();
        assert!(callers.has_certificates() && callers.by_token("x").is_none());
    }

    #[test]
    fn one_secret_belongs_to_one_caller() {
        let h = hash_token("shared");
        let err = CallingServices::parse(&format!("a user {h}\nb system {h}\n")).unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("same token"),
            "{err}"
        );
        let err =
            CallingServices::parse(&format!("a user cert-sha256:{h}\nb user cert-sha256:{h}\n"))
                .unwrap_err();
        assert!(err.contains("same certificate"), "{err}");
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
        let none = CallingServices::default();
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
        let some = CallingServices::parse(&format!("svc system {}", hash_token("t"))).unwrap();
        assert_eq!(check_exposure(&some, false, public, false).unwrap(), None);
        assert_eq!(check_exposure(&some, true, public, false).unwrap(), None);
    }

    #[test]
    fn mutual_tls_needs_callers_and_certificate_lines_need_mutual_tls() {
        let loopback = "127.0.0.1:50051".parse().unwrap();
        let none = CallingServices::default();
        for allow in [false, true] {
            let err = check_exposure(&none, true, loopback, allow).unwrap_err();
            assert!(err.contains("cert-sha256"), "{err}");
        }
        let pinned =
            CallingServices::parse(&format!("svc user cert-sha256:{}", hash_token("c"))).unwrap();
        assert_eq!(
            check_exposure(&pinned, true, loopback, false).unwrap(),
            None
        );
        assert!(check_exposure(&pinned, false, loopback, false).is_err());
    }
}

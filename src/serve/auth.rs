//! Bearer tokens for the data RPCs (`serve --auth-token-file FILE`).
//!
//! The file holds one token per line (several, so keys can rotate: add the
//! new one, move clients, remove the old one); blank lines and lines starting
//! with `#` are ignored; a token is printable ASCII without spaces (what an
//! HTTP/2 header can carry). A file without a token is refused at start-up.
//! [`TokenStore::reload`] re-reads it (on SIGHUP, from the reloader's
//! handler in [`super::reload`], via [`log_reload`]); a
//! file that fails then keeps the previous tokens.
//!
//! Every data RPC must carry `authorization: Bearer <token>`; the check is
//! made by [`super::guard`] before the service sees the call. Tokens are
//! compared in constant time ([`subtle`]) against every accepted token, and
//! never logged.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use subtle::ConstantTimeEq;
use tonic::{codegen::http::HeaderMap, Status};

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// Unreadable.
    #[error("--auth-token-file {}: cannot read it: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No token in it.
    #[error("--auth-token-file {}: holds no token (one per line; blank lines and # comments are ignored)", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A line that cannot be a header value.
    #[error("--auth-token-file {} line {line}: a token must be printable ASCII without spaces", .path.display())]
    BadToken {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
    },
}

/// Parse a token file's text (see the module documentation).
pub fn parse_tokens(path: &Path, text: &str) -> Result<Vec<Vec<u8>>, TokenFileError> {
    let mut tokens = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !line.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenFileError::BadToken {
                path: path.to_path_buf(),
                line: i + 1,
            });
        }
        tokens.push(line.as_bytes().to_vec());
    }
    if tokens.is_empty() {
        return Err(TokenFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(tokens)
}

fn read_tokens(path: &Path) -> Result<Vec<Vec<u8>>, TokenFileError> {
    let text = std::fs::read(path).map_err(|source| TokenFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_tokens(path, &String::from_utf8_lossy(&text))
}

/// The accepted tokens, from a file; shared by every guarded service.
pub struct TokenStore {
    path: PathBuf,
    tokens: RwLock<Arc<Vec<Vec<u8>>>>,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        f.debug_struct("TokenStore")
            .field("path", &self.path)
            .field("tokens", &self.len())
            .finish()
    }
}

/// What a request's `authorization` header lacks.
const MISSING: &str = "this server requires `authorization: Bearer <token>` metadata on every data RPC; pass --token-file (or EMBEDSTREAM_TOKEN) to embedstream clients, or send the header";
const REJECTED: &str = "the bearer token is not accepted by this server";

impl TokenStore {
    /// Read `path`; refuses an unreadable file or one without a token.
    pub fn open(path: &Path) -> Result<TokenStore, TokenFileError> {
        let tokens = read_tokens(path)?;
        Ok(TokenStore {
            path: path.to_path_buf(),
            tokens: RwLock::new(Arc::new(tokens)),
        })
    }

    /// The file the tokens come from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many tokens are accepted now.
    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// Whether no token is accepted (never true: an empty file is refused).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn current(&self) -> Arc<Vec<Vec<u8>>> {
        match self.tokens.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-read the file. On success the new tokens replace the old ones at
    /// once (calls already running are not affected) and their number is
    /// returned; on failure the old tokens stay.
    pub fn reload(&self) -> Result<usize, TokenFileError> {
        let tokens = read_tokens(&self.path)?;
        let n = tokens.len();
        let mut guard = match self.tokens.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(tokens);
        Ok(n)
    }

    /// Whether `token` is one of the accepted tokens. Compares with every
    /// token, each in constant time; only the lengths can be told apart.
    pub fn accepts(&self, token: &[u8]) -> bool {
        let tokens = self.current();
        let mut found = subtle::Choice::from(0);
        for accepted in tokens.iter() {
            found |= accepted.as_slice().ct_eq(token);
        }
        found.into()
    }

    /// Check a request's headers: `Ok` when `authorization` carries an
    /// accepted bearer token, else the UNAUTHENTICATED status to answer.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Status> {
        let Some(value) = headers.get("authorization") else {
            return Err(Status::unauthenticated(MISSING));
        };
        let value = value.as_bytes();
        // The scheme is case-insensitive (RFC 6750 §2.1, RFC 9110 §11.1).
        let token = match value.split_first_chunk::<7>() {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
            _ => {
                return Err(Status::unauthenticated(
                    "the authorization metadata is not `Bearer <token>`",
                ))
            }
        };
        if self.accepts(token) {
            Ok(())
        } else {
            Err(Status::unauthenticated(REJECTED))
        }
    }
}

/// Reload and log the outcome (the reloader's SIGHUP handler calls it).
pub fn log_reload(store: &TokenStore) {
    match store.reload() {
        Ok(n) => tracing::info!(
            file = %store.path().display(),
            tokens = n,
            "SIGHUP: bearer tokens reloaded"
        ),
        Err(e) => tracing::warn!("SIGHUP: {e}; the previous tokens stay in force"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codegen::http::HeaderValue;

    #[test]
    fn token_file_rules() {
        let p = Path::new("t.txt");
        assert_eq!(
            parse_tokens(p, "# comment\n\n  alpha  \nbeta\r\n").unwrap(),
            vec![b"alpha".to_vec(), b"beta".to_vec()]
        );
        assert_eq!(
            parse_tokens(p, "# only\n\n").unwrap_err().to_string(),
            "--auth-token-file t.txt: holds no token (one per line; blank lines and # comments are ignored)"
        );
        assert_eq!(
            parse_tokens(p, "ok\nwith space\n").unwrap_err().to_string(),
            "--auth-token-file t.txt line 2: a token must be printable ASCII without spaces"
        );
        assert!(parse_tokens(p, "é\n").is_err());
    }

    #[test]
    fn checks_headers_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "old\nnew\n").unwrap();
        let store = TokenStore::open(&path).unwrap();
        assert_eq!(store.len(), 2);
        assert!(!format!("{store:?}").contains("old"));
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("authorization", HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(store.check(&headers("Bearer old")).is_ok());
        assert!(store.check(&headers("bearer new")).is_ok());
        let code = |h: &HeaderMap| store.check(h).unwrap_err().code();
        assert_eq!(code(&headers("Bearer other")), tonic::Code::Unauthenticated);
        assert_eq!(code(&headers("Bearer ol")), tonic::Code::Unauthenticated);
        assert_eq!(code(&headers("Basic old")), tonic::Code::Unauthenticated);
        assert_eq!(code(&headers("Bearer")), tonic::Code::Unauthenticated);
        assert_eq!(code(&HeaderMap::new()), tonic::Code::Unauthenticated);
        assert!(store
            .check(&HeaderMap::new())
            .unwrap_err()
            .message()
            .starts_with("this server requires `authorization: Bearer <token>`"));

        std::fs::write(&path, "newer\n").unwrap();
        assert_eq!(store.reload().unwrap(), 1);
        assert!(store.check(&headers("Bearer old")).is_err());
        assert!(store.check(&headers("Bearer newer")).is_ok());
        // A broken file keeps the tokens in force.
        std::fs::write(&path, "\n").unwrap();
        assert!(store.reload().is_err());
        assert!(store.check(&headers("Bearer newer")).is_ok());
    }
}

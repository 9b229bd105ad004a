//! Parsing `WWW-Authenticate` (RFC 7235 challenges) into what the auth flow
//! needs: a Bearer realm/service/scope, or a Basic realm.
//!
//! Kept apart from the flow itself because the grammar is where registries
//! differ in practice: several challenges in one header, quoted values with
//! commas (`scope="repository:a:pull,push"`), escaped quotes, unquoted URLs,
//! extra parameters such as `error="insufficient_scope"`. A lenient,
//! allocation-light tokenizer handles all of these and never loops without
//! consuming input.

/// One challenge: an auth scheme and its parameters (or a token68).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased scheme (`bearer`, `basic`).
    pub scheme: String,
    /// Parameters in order, names lowercased, values unquoted.
    pub params: Vec<(String, String)>,
    /// The `token68` form (`Negotiate abc==`), when used instead of parameters.
    pub token68: Option<String>,
}

impl Challenge {
    /// A parameter's value by (case-insensitive) name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// This challenge as a Bearer challenge, when it is one with a realm.
    pub fn bearer(&self) -> Option<BearerChallenge> {
        if self.scheme != "bearer" {
            return None;
        }
        let realm = self.param("realm")?.to_string();
        Some(BearerChallenge {
            realm,
            service: self.param("service").map(str::to_string),
            scopes: self
                .param("scope")
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            error: self.param("error").map(str::to_string),
        })
    }

    pub fn is_basic(&self) -> bool {
        self.scheme == "basic"
    }
}

/// A Bearer challenge as the Docker token spec uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerChallenge {
    /// Where to get a token (an absolute URL, normally).
    pub realm: String,
    pub service: Option<String>,
    /// Space-separated in the header; one entry per scope here.
    pub scopes: Vec<String>,
    /// `invalid_token`, `insufficient_scope`, … when the server said why.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Quoted(String),
    Eq,
    Comma,
}

fn tokenize(input: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            ',' => {
                chars.next();
                out.push(Tok::Comma);
            }
            '=' => {
                chars.next();
                out.push(Tok::Eq);
            }
            '"' => {
                chars.next();
                let mut s = String::new();
                // Ends at the closing quote or at the end of input (lenient).
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(escaped) = chars.next() {
                                s.push(escaped);
                            }
                        }
                        other => s.push(other),
                    }
                }
                out.push(Tok::Quoted(s));
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, ',' | '=' | '"') {
                        break;
                    }
                    s.push(c);
                    chars.next();
                }
                out.push(Tok::Word(s));
            }
        }
    }
    out
}

/// Parse one `WWW-Authenticate` header value into its challenges.
/// Garbage yields fewer (or no) challenges, never an error or a panic.
pub fn parse_www_authenticate(header: &str) -> Vec<Challenge> {
    let toks = tokenize(header);
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let scheme = match &toks[i] {
            Tok::Word(w) => w.to_ascii_lowercase(),
            _ => {
                i += 1;
                continue;
            }
        };
        i += 1;
        let mut challenge = Challenge {
            scheme,
            params: Vec::new(),
            token68: None,
        };
        // token68: a word followed only by '=' padding, then a comma or the end.
        if let Some(Tok::Word(w)) = toks.get(i) {
            let mut j = i + 1;
            while toks.get(j) == Some(&Tok::Eq) {
                j += 1;
            }
            if matches!(toks.get(j), None | Some(Tok::Comma)) {
                challenge.token68 = Some(format!("{w}{}", "=".repeat(j - i - 1)));
                out.push(challenge);
                i = j;
                continue;
            }
        }
        // auth-params: name '=' value, separated by commas; a word not followed
        // by '=' starts the next challenge.
        loop {
            match (toks.get(i), toks.get(i + 1), toks.get(i + 2)) {
                (Some(Tok::Word(name)), Some(Tok::Eq), Some(Tok::Word(v) | Tok::Quoted(v))) => {
                    challenge
                        .params
                        .push((name.to_ascii_lowercase(), v.clone()));
                    i += 3;
                }
                (Some(Tok::Comma), _, _) => i += 1,
                _ => break,
            }
        }
        out.push(challenge);
    }
    out
}

/// All challenges from every `WWW-Authenticate` header of a response.
pub fn challenges_from_headers(headers: &reqwest::header::HeaderMap) -> Vec<Challenge> {
    headers
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_www_authenticate)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_bearer() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#;
        let c = parse_www_authenticate(h);
        assert_eq!(c.len(), 1);
        let b = c[0].bearer().unwrap();
        assert_eq!(b.realm, "https://auth.docker.io/token");
        assert_eq!(b.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(b.scopes, vec!["repository:library/alpine:pull"]);
        assert_eq!(b.error, None);
    }

    #[test]
    fn quoted_commas_and_multiple_scopes() {
        let h = r#"Bearer realm="https://r.example/token?a=1,b=2", service="svc", scope="repository:a/b:pull,push repository:c:pull", error="insufficient_scope""#;
        let b = parse_www_authenticate(h)[0].bearer().unwrap();
        assert_eq!(b.realm, "https://r.example/token?a=1,b=2");
        assert_eq!(
            b.scopes,
            vec!["repository:a/b:pull,push", "repository:c:pull"]
        );
        assert_eq!(b.error.as_deref(), Some("insufficient_scope"));
    }

    #[test]
    fn several_challenges_in_one_header() {
        let h = r#"Basic realm="Registry Realm", Bearer realm="https://t.example/auth",service=reg, Negotiate abc123=="#;
        let c = parse_www_authenticate(h);
        assert_eq!(c.len(), 3, "{c:?}");
        assert!(c[0].is_basic());
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
        let b = c[1].bearer().unwrap();
        assert_eq!(b.realm, "https://t.example/auth");
        assert_eq!(b.service.as_deref(), Some("reg"));
        assert!(b.scopes.is_empty());
        assert_eq!(c[2].scheme, "negotiate");
        assert_eq!(c[2].token68.as_deref(), Some("abc123=="));
    }

    #[test]
    fn case_escapes_and_unquoted_urls() {
        let h = r#"BEARER Realm=https://h:5001/token, Service="my \"quoted\" svc""#;
        let c = parse_www_authenticate(h);
        let b = c[0].bearer().unwrap();
        assert_eq!(b.realm, "https://h:5001/token");
        assert_eq!(b.service.as_deref(), Some(r#"my "quoted" svc"#));
    }

    #[test]
    fn basic_without_params_and_garbage() {
        let c = parse_www_authenticate("Basic");
        assert_eq!(c.len(), 1);
        assert!(c[0].is_basic());
        assert!(c[0].bearer().is_none());
        // Bearer without a realm is useless to us.
        assert!(parse_www_authenticate(r#"Bearer service="x""#)[0]
            .bearer()
            .is_none());
        for junk in [
            "",
            ",,,",
            "=",
            "\"unterminated",
            "= = ,\"",
            "Bearer realm=",
            "Bearer ,,, realm=\"x\"",
        ] {
            let _ = parse_www_authenticate(junk);
        }
        let c = parse_www_authenticate("Bearer ,,, realm=\"x\"");
        assert_eq!(c[0].bearer().map(|b| b.realm), Some("x".to_string()));
    }
}
